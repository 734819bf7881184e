// Group commit per coupon. Claims on a coupon that arrive while its transaction is in flight wait in
// an in-process queue; when it commits, the next transaction decides all of them (up to batchMax) under
// one lock. Same answers as one-by-one in arrival order, at a fraction of the lock and commit cost.

import type { Database } from "../db/client";
import { pgErrorCode, UNIQUE_VIOLATION } from "../db/errors";
import { AppError } from "../errors";
import { errorFields, type Logger } from "../log";
import { type BatchResult, type ClaimDecision, decideClaims } from "./claim";
import { createSoldOutCache } from "./sold-out";

export interface ClaimerOptions {
  batchMax: number;
  /** Claims waiting per coupon before new ones are refused with 503. */
  queueMax: number;
  /** Claims waiting in the whole process before new ones are refused with 503. */
  pendingMax: number;
  /** Deadline of a claim from its arrival: queued past it -> 503, nothing applied; a batch still in
   *  flight at its first claim's deadline is aborted (rolled back unless its COMMIT was already sent). */
  timeoutMs: number;
  soldOutCacheMax: number;
  log: Logger;
  /** The batch decision; replaceable so tests can make a transaction fail. */
  decide?: typeof decideClaims;
}

export interface Claimer {
  claim(couponName: string, userId: string): Promise<ClaimDecision>;
  /** Resolves once no claim is waiting or in flight. */
  drain(): Promise<void>;
  readonly pending: number;
}

interface Waiter {
  userId: string;
  deadline: number;
  resolve(decision: ClaimDecision): void;
  reject(error: AppError): void;
  timer: ReturnType<typeof setTimeout>;
  expired: boolean;
}

const busy = (detail: string) => new AppError("SERVICE_UNAVAILABLE", detail, { retryAfter: 1 });

/** Creates the claim queue for one process; wire one per app. */
export function createClaimer(db: Database, options: ClaimerOptions): Claimer {
  const decide = options.decide ?? decideClaims;
  const soldOut = createSoldOutCache(db, options.soldOutCacheMax);
  const lanes = new Map<string, Waiter[]>();
  let pending = 0;
  let drained: (() => void)[] = [];

  // A unique violation means something bypassed the lock; fall back to one claim per transaction,
  // where the violation itself is the answer (already claimed).
  async function decideBatch(couponName: string, userIds: string[], signal: AbortSignal): Promise<BatchResult> {
    try {
      return await decide(db, couponName, userIds, signal);
    } catch (error) {
      if (pgErrorCode(error) !== UNIQUE_VIOLATION) throw error;
      if (userIds.length === 1) return { decisions: [{ outcome: "already_claimed" }], remaining: null };
      const decisions: ClaimDecision[] = [];
      let remaining: number | null = null;
      for (const userId of userIds) {
        const single = await decideBatch(couponName, [userId], signal);
        decisions.push(...single.decisions);
        remaining = single.remaining ?? remaining;
      }
      return { decisions, remaining };
    }
  }

  async function run(couponName: string, queue: Waiter[]): Promise<void> {
    while (queue.length > 0) {
      const batch = queue.splice(0, options.batchMax).filter((waiter) => !waiter.expired);
      for (const waiter of batch) clearTimeout(waiter.timer);
      if (batch.length === 0) continue;
      // The batch lives until its oldest claim's deadline: a stalled connection cannot hold it longer.
      const abort = new AbortController();
      const timer = setTimeout(() => abort.abort(), Math.max(0, (batch[0] as Waiter).deadline - Date.now()));
      try {
        const result = await Promise.race([
          decideBatch(
            couponName,
            batch.map((waiter) => waiter.userId),
            abort.signal,
          ),
          new Promise<never>((_, reject) => abort.signal.addEventListener("abort", () => reject(abort.signal.reason))),
        ]);
        batch.forEach((waiter, i) => {
          waiter.resolve(result.decisions[i] as ClaimDecision);
        });
        if (result.remaining === 0) soldOut.markSoldOut(couponName);
      } catch (error) {
        options.log.error("claim batch failed; its claims were answered 503", {
          coupon_name: couponName,
          batch_size: batch.length,
          ...errorFields(error),
        });
        // Usually nothing was applied (the transaction rolled back); if the connection broke during
        // COMMIT it may have been. Either way a retry is safe: it answers 201 or ALREADY_CLAIMED.
        const failure = busy("The claim could not be confirmed; retrying it is safe.");
        for (const waiter of batch) waiter.reject(failure);
      } finally {
        clearTimeout(timer);
        pending -= batch.length;
      }
    }
    lanes.delete(couponName);
    if (pending === 0) {
      for (const resolve of drained) resolve();
      drained = [];
    }
  }

  return {
    claim(couponName, userId) {
      const fast = soldOut.decide(couponName, userId);
      if (typeof fast === "string") return Promise.resolve({ outcome: fast });
      if (fast) return fast.then((outcome) => ({ outcome }));
      let queue = lanes.get(couponName);
      if ((queue?.length ?? 0) >= options.queueMax || pending >= options.pendingMax) {
        return Promise.reject(busy("Too many claims are waiting; retry shortly."));
      }
      const start = !queue;
      if (!queue) {
        queue = [];
        lanes.set(couponName, queue);
      }
      const waiting = queue;
      const decision = new Promise<ClaimDecision>((resolve, reject) => {
        const waiter: Waiter = {
          userId,
          deadline: Date.now() + options.timeoutMs,
          resolve,
          reject,
          expired: false,
          timer: setTimeout(() => {
            waiter.expired = true;
            pending--;
            reject(busy("The claim waited too long for its turn; nothing was applied. Retry shortly."));
          }, options.timeoutMs),
        };
        waiting.push(waiter);
      });
      pending++;
      if (start) void run(couponName, waiting);
      return decision;
    },
    drain() {
      return pending === 0 ? Promise.resolve() : new Promise((resolve) => drained.push(resolve));
    },
    get pending() {
      return pending;
    },
  };
}
