// The in-process turns of one Idempotency-Key.
import { describe, expect, it } from "bun:test";
import { createKeyTurns } from "../../src/engine/key-turns";

/** A promise with its resolve and reject at hand. */
function deferred<T = void>() {
  let resolve: (value: T) => void = () => {};
  let reject: (error: unknown) => void = () => {};
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const later = () => performance.now() + 10_000;

describe("createKeyTurns", () => {
  const settled = () => false;

  it("makes a second take of a key wait for the first to finish, then runs it", async () => {
    const turns = createKeyTurns();
    const events: string[] = [];
    const first = deferred();
    const a = turns.take(
      "k",
      later(),
      async () => {
        events.push("a start");
        await first.promise;
        events.push("a end");
        return "a";
      },
      settled,
    );
    const b = turns.take(
      "k",
      later(),
      async () => {
        events.push("b start");
        return "b";
      },
      settled,
    );
    await Bun.sleep(20);
    expect(events).toEqual(["a start"]);
    expect(turns.size).toBe(1);
    first.resolve();
    expect(await Promise.all([a, b])).toEqual(["a", "b"]);
    expect(events).toEqual(["a start", "a end", "b start"]);
    expect(turns.size).toBe(0);
  });

  it("runs the takes of one key one at a time, each exactly once", async () => {
    const turns = createKeyTurns();
    let active = 0;
    let most = 0;
    const ran: number[] = [];
    const takes = Array.from({ length: 5 }, (_, i) =>
      turns.take(
        "k",
        later(),
        async () => {
          most = Math.max(most, ++active);
          await Bun.sleep(2);
          ran.push(i);
          active--;
          return i;
        },
        settled,
      ),
    );
    expect(await Promise.all(takes)).toEqual([0, 1, 2, 3, 4]);
    expect(most).toBe(1);
    expect([...ran].sort()).toEqual([0, 1, 2, 3, 4]);
  });

  it("answers in_use to a take whose deadline passes while it waits, and never runs it", async () => {
    const turns = createKeyTurns();
    const first = deferred();
    const a = turns.take("k", later(), () => first.promise.then(() => "a"), settled);
    let ranB = false;
    const b = turns.take(
      "k",
      performance.now() + 30,
      async () => {
        ranB = true;
        return "b";
      },
      settled,
    );
    expect(await b).toBe("in_use");
    first.resolve();
    expect(await a).toBe("a");
    await Bun.sleep(10);
    expect(ranB).toBe(false);
    expect(turns.size).toBe(0);
  });

  it("never makes takes of different keys wait for each other", async () => {
    const turns = createKeyTurns();
    const first = deferred();
    const a = turns.take("k1", later(), () => first.promise.then(() => "a"), settled);
    expect(await turns.take("k2", later(), async () => "b", settled)).toBe("b");
    expect(turns.size).toBe(1);
    first.resolve();
    expect(await a).toBe("a");
  });

  it("frees the key when run() throws: the error reaches its caller, a waiting take gets in_use, a later one runs", async () => {
    const turns = createKeyTurns();
    const first = deferred<string>();
    const a = turns.take("k", later(), () => first.promise, settled);
    let ranB = false;
    const b = turns.take(
      "k",
      later(),
      async () => {
        ranB = true;
        return "b";
      },
      settled,
    );
    first.reject(new Error("batch failed"));
    await expect(a).rejects.toThrow("batch failed");
    expect(await b).toBe("in_use");
    expect(ranB).toBe(false);
    expect(turns.size).toBe(0);
    expect(await turns.take("k", later(), async () => "c", settled)).toBe("c");
  });

  it("answers in_use to the takes waiting on one that ended unsettled (no answer by its deadline), then runs later ones", async () => {
    const turns = createKeyTurns();
    const first = deferred<string>();
    const unsettled = (result: string) => result === "unconfirmed";
    const a = turns.take("k", later(), () => first.promise, unsettled);
    const b = turns.take("k", later(), async () => "b", unsettled);
    const c = turns.take("k", later(), async () => "c", unsettled);
    first.resolve("unconfirmed");
    expect(await Promise.all([a, b, c])).toEqual(["unconfirmed", "in_use", "in_use"]);
    expect(turns.size).toBe(0);
    expect(await turns.take("k", later(), async () => "d", unsettled)).toBe("d");
  });
});
