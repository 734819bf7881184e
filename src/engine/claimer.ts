// THE entry of every write decided in turn on its coupon (domain/claim.ts's Claimer), and all of its
// admission under the request's one deadline: an Idempotency-Key's turn (key-turns.ts), an answer from
// memory when it cannot be wrong (answers.ts), else the coupon's next batch (group-commit.ts), whose
// one statement decides it under the coupon's lock (store/claims.ts); a refusal for overload is paced.
// Every expected outcome is a value of domain/outcomes.ts, never a thrown error.
import {
  type Claimer,
  type ClaimRequest,
  type ClaimResult,
  type ClaimTracing,
  type CreateRequest,
  type CreateResult,
  plainResults,
} from "../domain/claim";
import type { Coupon, SaleChange } from "../domain/coupon";
import { couponNotFound, fail, failures } from "../domain/errors";
import { closedOutcomes } from "../domain/outcomes";
import { errorFields, type Logger } from "../log";
import type { ChangeFeed } from "../store/changes";
import { decideClaims } from "../store/claims";
import { createCoupon, updateCoupon } from "../store/coupons";
import type { Database } from "../store/database";
import { withDeadline } from "../store/deadline";
import { dropFence, leaseWaitMs, raiseFence } from "../store/fences";
import { createAnswers } from "./answers";
import { createGroupCommit } from "./group-commit";
import { createKeyTurns } from "./key-turns";

export interface ClaimerOptions {
  /** CLAIM_BATCH_MAX, CLAIM_QUEUE_MAX, PENDING_MAX: the batch size and the queue bounds. */
  batchMax: number;
  queueMax: number;
  pendingMax: number;
  /** REQUEST_TIMEOUT_MS: the bound on background loads (a request brings its own deadline). */
  timeoutMs: number;
  /** SOLD_OUT_CACHE_MAX, SOLD_OUT_CACHE_BYTES: what answers from memory may hold. */
  soldOutCacheMax: number;
  soldOutCacheBytes: number;
  /** SCHEDULE_MARGIN_MS: claims this close to an opening are decided by the database. */
  scheduleMarginMs: number;
  /** The change feed that tells what answers from memory must forget; none live = none from memory. */
  feed: ChangeFeed;
  /** OVERLOAD_REFUSAL_DELAY_MS: how long a claim refused for overload waits before its refusal (never past its deadline). */
  refusalDelayMs: number;
  log: Logger;
  /** The batch decision; replaceable so tests can make it fail or watch it. */
  decide?: typeof decideClaims;
  /** Spans of the queue waits and the batches (tracing/tracing.ts); none by default. */
  tracing?: ClaimTracing;
  /** A database in this thread (PGlite): each batch gathers what the event loop's turn read (group-commit.ts). */
  gatherTurn?: boolean;
}

// A failed batch's log line names the traces of the sampled requests it answered 503 (the only ones
// that carry a trace; the first 8: a line stays short at 100% sampling, and any one of them leads to
// the batch's span through its link).
const TRACE_IDS_LOGGED = 8;

/** `trace_ids` of a batch's sampled requests, for its log line; nothing when none is sampled. */
function traceIds(requests: readonly ClaimRequest[]): { trace_ids?: string[] } {
  const ids = [...new Set(requests.flatMap((request) => (request.trace ? [request.trace.traceId] : [])))];
  return ids.length > 0 ? { trace_ids: ids.slice(0, TRACE_IDS_LOGGED) } : {};
}

// Sent, with no answer by its deadline: its transaction may still be running, its key still in use.
const isUnconfirmed = (result: ClaimResult) => result.outcome === "unconfirmed";

/** Creates the claimer of one process; wire one per app. */
export function createClaimer(db: Database, options: ClaimerOptions): Claimer & { pendingMax: number } {
  const { log, feed } = options;
  const decide = options.decide ?? decideClaims;
  const turns = createKeyTurns();
  let fromMemory = 0;
  const answers = createAnswers(db, {
    feed,
    maxClaimers: options.soldOutCacheMax,
    maxBytes: options.soldOutCacheBytes,
    marginMs: options.scheduleMarginMs,
    loadTimeoutMs: options.timeoutMs,
    log,
  });
  // A change announced by any replica: forget, then learn again at once, so the herd waiting for a
  // newly scheduled (or paused) sale is answered from memory from its first claim.
  feed.subscribe({
    change(coupon) {
      answers.invalidate(coupon);
      void answers.learn(coupon);
    },
    lost: answers.clear,
  });
  const batches = createGroupCommit<ClaimRequest, ClaimResult>({
    batchMax: options.batchMax,
    queueMax: options.queueMax,
    pendingMax: options.pendingMax,
    tracing: options.tracing,
    gatherTurn: options.gatherTurn,
    decide: decide.bind(undefined, db),
    onTrouble({ key, items, error, lateMs }) {
      const batch = { coupon_name: key, batch_size: items.length, ...traceIds(items) };
      if (error) log.error("claim batch failed; its claims were answered 503", { ...batch, ...errorFields(error) });
      else
        log.warn("claim batch answered after its deadline; its claims had been answered 503", {
          ...batch,
          late_ms: lateMs,
        });
    },
  });

  /** What memory learns from a result the database decided now (a replay tells of an earlier moment). */
  function heard(coupon: string, result: ClaimResult): void {
    if (result.replayed) return;
    // A release gives stock back: forget at once here (its batch announced it to the other replicas).
    if (result.outcome === "released") answers.invalidate(coupon);
    else if (closedOutcomes.has(result.outcome) || (result.outcome === "created" && result.remaining === 0))
      void answers.learn(coupon);
  }

  // A refusal answered at once is a new request at once from a client that ignores Retry-After: a
  // herd of them becomes a flood of instant 503s that takes the event loop from the claims that were
  // admitted. Held for a while, each connection can cost only one refusal per hold.
  let held = 0;
  const paced = (request: ClaimRequest): Promise<ClaimResult> | ClaimResult => {
    const ms = Math.min(options.refusalDelayMs, request.deadline - performance.now());
    if (ms <= 0 || held >= options.pendingMax) return plainResults.overloaded;
    held++;
    return new Promise((resolve) =>
      setTimeout(() => {
        held--;
        resolve(plainResults.overloaded);
      }, ms),
    );
  };

  /** Queues `request` for its coupon's next batch. */
  function enqueue(request: ClaimRequest): Promise<ClaimResult> {
    return batches.submit(request.coupon, request).then((answer) => {
      if (answer === "overloaded") return paced(request);
      if (typeof answer === "string") return plainResults[answer];
      heard(request.coupon, answer);
      return answer;
    });
  }

  /**
   * Announces a change of `coupon` to every replica and waits out the lease (store/fences.ts): the
   * fence's token for the change's transaction, undefined when there is no such coupon, or "late"
   * when the deadline would pass first (nothing fenced).
   */
  async function fence(coupon: string, deadline: number): Promise<string | undefined | "late"> {
    const token = await raiseFence(db, coupon, deadline);
    answers.invalidate(coupon);
    if (token === undefined) return undefined;
    const wait = leaseWaitMs(feed.leaseMs);
    if (performance.now() + wait >= deadline) {
      await dropFence(db, token);
      return "late";
    }
    if (wait > 0) await Bun.sleep(wait);
    return token;
  }

  /**
   * A release is fenced first: it gives stock back, which every replica must forget before it is made.
   * Refused as expired (its fence missing: the coupon was created after the fence was asked for, or
   * the fence expired), nothing was applied: fenced again while the deadline allows.
   */
  async function release(request: ClaimRequest): Promise<ClaimResult> {
    for (;;) {
      let token: string | undefined | "late";
      try {
        token = await fence(request.coupon, request.deadline);
      } catch (error) {
        log.warn("could not fence a release; answered 503", { coupon_name: request.coupon, ...errorFields(error) });
        return plainResults.unconfirmed;
      }
      if (token === "late") return plainResults.expired;
      // No such coupon, nothing fenced: the batch answers not_found (stored under a key, if any).
      const result = await enqueue(token === undefined ? request : { ...request, fence: token });
      if (result.outcome !== "expired" || performance.now() >= request.deadline) return result;
    }
  }

  /** A claim or release in its turn: a release fenced, a claim from memory when it can, else queued. */
  function admit(request: ClaimRequest): Promise<ClaimResult> {
    if (request.release) return release(request);
    // A keyed request goes to the database, which stores its decision (or has one stored).
    const known = request.idempotency ? undefined : answers.answer(request.coupon, request.user);
    if (known) {
      fromMemory++;
      return Promise.resolve(known);
    }
    return enqueue(request);
  }

  /** A keyed request in its key's turn: a second request with the key waits for the first one's answer. */
  async function inTurn(request: ClaimRequest, key: string): Promise<ClaimResult> {
    const result = await turns.take(key, request.deadline, () => admit(request), isUnconfirmed);
    return result === "in_use" ? plainResults.idempotency_key_in_use : result;
  }

  return {
    claimCoupon(request) {
      // Not async: a claim answered from memory costs no promise beyond its own.
      return request.idempotency ? inTurn(request, request.idempotency.key) : admit(request);
    },

    async createCoupon(request: CreateRequest): Promise<CreateResult> {
      const { name, amount, schedule, idempotency, deadline } = request;
      const create = () =>
        withDeadline(createCoupon(db, name, amount, schedule, idempotency), deadline - performance.now());
      if (!idempotency) return create();
      // A create that failed (or timed out) leaves its key in use for the requests waiting on it.
      const result = await turns.take(idempotency.key, deadline, create, () => false);
      return result === "in_use" ? { outcome: "idempotency_key_in_use" } : result;
    },

    async changeSale(coupon: string, change: SaleChange, deadline: number): Promise<Coupon> {
      const token = await withDeadline(fence(coupon, deadline), deadline - performance.now());
      if (token === undefined) throw couponNotFound(coupon);
      if (token === "late") throw fail(failures.tooLateForFence);
      try {
        return await withDeadline(updateCoupon(db, coupon, change, token), deadline - performance.now());
      } catch (error) {
        // The change was refused or may never commit: its fence need not stand until it expires.
        void dropFence(db, token).catch(() => {});
        throw error;
      } finally {
        answers.invalidate(coupon); // at once here; the other replicas hear it on the change feed
      }
    },

    stats: {
      get batches() {
        return batches.batches;
      },
      get batched() {
        return batches.batched;
      },
      get fromMemory() {
        return fromMemory;
      },
    },
    get pending() {
      return batches.pending;
    },
    pendingMax: options.pendingMax,
    drain: batches.drain,
  };
}
