// One request per Idempotency-Key at a time in this process: the claimer's first step of admission for
// a keyed request. Across replicas the database makes the same wait, on the key's row
// (drizzle/0004_idempotency.sql).

/**
 * One request per key at a time in this process. A second one waits for the first to be answered,
 * then runs (and the database answers it with the stored decision, or executes it if none was
 * stored). Two cases answer "in_use" instead: its deadline passes while it waits; or the first ended
 * `unsettled` (no answer by its deadline: its transaction may still be running, so the key is still
 * in use there, and a retry shortly gets its answer).
 */
export function createKeyTurns() {
  const held = new Map<string, Promise<boolean>>();
  return {
    async take<T>(
      key: string,
      deadline: number,
      run: () => Promise<T>,
      unsettled: (result: T) => boolean,
    ): Promise<T | "in_use"> {
      for (let turn = held.get(key); turn; turn = held.get(key)) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const late = new Promise<"late">((resolve) => {
          timer = setTimeout(() => resolve("late"), Math.max(0, deadline - performance.now()));
        });
        const waited = await Promise.race([turn, late]);
        clearTimeout(timer);
        if (waited === "late" || waited === true) return "in_use";
      }
      let done = (_unsettled: boolean) => {};
      held.set(
        key,
        new Promise<boolean>((resolve) => {
          done = resolve;
        }),
      );
      let open = true; // a run that throws leaves the key unsettled too
      try {
        const result = await run();
        open = unsettled(result);
        return result;
      } finally {
        held.delete(key);
        done(open);
      }
    },
    get size() {
      return held.size;
    },
  };
}

export type KeyTurns = ReturnType<typeof createKeyTurns>;
