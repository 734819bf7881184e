// Group commit, knowing nothing of SQL. Items for one key (a coupon) that arrive while that key's batch
// is in flight wait in an in-process queue; when it is decided, the next batch takes all of them (up
// to batchMax) in arrival order. Admission (queue bounds) and the deadline of every item live here,
// so every wait an item can make, queued or in flight, ends by its deadline. A batch given up on at
// its deadline is still in flight: the key's next batch is not sent before that one's fate is known,
// so batches reach the database in arrival order even then (a late one could otherwise undo a newer
// decision: re-create a released claim, or release a re-claim). The spans of a traced item's queue wait
// and of its batch start and end here, where the waiting and the sending happen.
import type { ClaimTracing, Trace } from "../domain/claim";

/** Why an item got no result: refused at admission, expired in the queue, or sent but not confirmed. */
export type Refusal = "overloaded" | "expired" | "unconfirmed";

export interface GroupCommitOptions<T, R> {
  batchMax: number;
  /** Items waiting per key before new ones are refused. */
  queueMax: number;
  /** Items waiting or in flight in the whole process before new ones are refused. */
  pendingMax: number;
  /** Decides one batch of one key: a result per item, in order. Once called it cannot be taken back. */
  decide(key: string, items: T[]): Promise<R[]>;
  /** Told when a batch failed, or answered after its items had been answered "unconfirmed". */
  onTrouble(event: { key: string; items: readonly T[]; error?: unknown; lateMs?: number }): void;
  /** Spans of the queue waits and the batches of traced items; none by default. */
  tracing?: ClaimTracing;
  /**
   * True: a key's batch waits for the end of the event loop's turn (setImmediate), so the items read in
   * that turn join it. For a database in this thread (PGlite), which decides a batch before the next
   * request is even read: without the wait, every batch there holds one item.
   */
  gatherTurn?: boolean;
}

export interface GroupCommit<T, R> {
  /** The item's result, or why there is none; never rejects. */
  submit(key: string, item: T): Promise<R | Refusal>;
  /** Resolves once no item is waiting or in flight. */
  drain(): Promise<void>;
  readonly pending: number;
  /** Batches sent, and items sent in them (their average size: batched / batches). */
  readonly batches: number;
  readonly batched: number;
}

interface Waiter<T, R> {
  item: T;
  settle(answer: R | Refusal): void;
  timer?: ReturnType<typeof setTimeout>;
  /** The open span of a traced item's wait: ended when its batch is sent, or when it is answered without one. */
  wait?: { end(): void };
  done: boolean;
}

/** Creates a batcher for items that carry their own `deadline` (performance.now() milliseconds) and maybe a trace. */
export function createGroupCommit<T extends { deadline: number; trace?: Trace }, R>(
  options: GroupCommitOptions<T, R>,
): GroupCommit<T, R> {
  const lanes = new Map<string, Waiter<T, R>[]>();
  const { tracing } = options;
  let pending = 0;
  let batches = 0;
  let batched = 0;
  let drained: (() => void)[] = [];

  function endWait(waiter: Waiter<T, R>): void {
    waiter.wait?.end();
    waiter.wait = undefined;
  }

  function finish(waiter: Waiter<T, R>, answer: R | Refusal): void {
    if (waiter.done) return;
    waiter.done = true;
    clearTimeout(waiter.timer);
    endWait(waiter);
    pending--;
    waiter.settle(answer);
    if (pending === 0) {
      for (const resolve of drained) resolve();
      drained = [];
    }
  }

  /**
   * Sends one batch and answers it: with its results, or "unconfirmed" at its first deadline.
   * Resolves once its fate is known (decided or failed), never at the deadline.
   */
  function decideBatch(key: string, batch: Waiter<T, R>[]): Promise<void> {
    const sentAt = performance.now();
    let answeredAt: number | undefined;
    const deadline = Math.min(...batch.map((waiter) => waiter.item.deadline));
    const items = batch.map((waiter) => waiter.item);
    batches++;
    batched += items.length;
    const traced = tracing !== undefined && items.some((item) => item.trace);
    const decided = traced
      ? tracing.traceBatch(
          key,
          batch.map((waiter) => {
            endWait(waiter);
            return waiter.item.trace;
          }),
          () => options.decide(key, items),
        )
      : options.decide(key, items);
    return new Promise<void>((resolve) => {
      const giveUp = () => {
        answeredAt = performance.now();
        for (const waiter of batch) finish(waiter, "unconfirmed");
      };
      const timer = setTimeout(giveUp, Math.max(0, deadline - sentAt));
      decided.then(
        (results) => {
          clearTimeout(timer);
          if (answeredAt !== undefined) options.onTrouble({ key, items, lateMs: performance.now() - answeredAt });
          batch.forEach((waiter, i) => {
            finish(waiter, results[i] as R);
          });
          resolve();
        },
        (error) => {
          clearTimeout(timer);
          options.onTrouble({ key, items, error });
          for (const waiter of batch) finish(waiter, "unconfirmed");
          resolve();
        },
      );
    });
  }

  async function run(key: string, queue: Waiter<T, R>[]): Promise<void> {
    if (options.gatherTurn) await new Promise((resolve) => setImmediate(resolve));
    while (queue.length > 0) {
      const now = performance.now();
      const batch: Waiter<T, R>[] = [];
      for (const waiter of queue.splice(0, options.batchMax)) {
        if (waiter.done) continue;
        // Timers fire late on a busy loop: a deadline already past means "never sent", exactly.
        if (waiter.item.deadline <= now) finish(waiter, "expired");
        else {
          clearTimeout(waiter.timer); // from now on the batch's deadline answers it
          batch.push(waiter);
        }
      }
      if (batch.length > 0) await decideBatch(key, batch);
    }
    lanes.delete(key);
  }

  return {
    submit(key, item) {
      let queue = lanes.get(key);
      if ((queue?.length ?? 0) >= options.queueMax || pending >= options.pendingMax) {
        return Promise.resolve("overloaded");
      }
      const ms = item.deadline - performance.now();
      if (ms <= 0) return Promise.resolve("expired");
      const start = !queue;
      if (!queue) {
        queue = [];
        lanes.set(key, queue);
      }
      const lane = queue;
      pending++;
      const answer = new Promise<R | Refusal>((settle) => {
        const waiter: Waiter<T, R> = { item, settle, done: false };
        if (item.trace && tracing) waiter.wait = tracing.startQueueWait(item.trace, key);
        waiter.timer = setTimeout(() => finish(waiter, "expired"), ms);
        lane.push(waiter);
      });
      if (start) void run(key, lane);
      return answer;
    },
    drain() {
      return pending === 0 ? Promise.resolve() : new Promise((resolve) => drained.push(resolve));
    },
    get pending() {
      return pending;
    },
    get batches() {
      return batches;
    },
    get batched() {
      return batched;
    },
  };
}
