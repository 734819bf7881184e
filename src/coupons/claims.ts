// THE entry of a claim: a ClaimRequest in, a ClaimResult out. It is answered from memory when that
// cannot be wrong (answers.ts), else queued for its coupon's next batch (group-commit.ts), whose one
// statement decides it under the coupon's lock (claim-sql.ts); or refused at admission. Every expected
// outcome is a value of outcomes.ts, never a thrown error.
import type { ChangeFeed } from "../db/changes";
import type { Database } from "../db/client";
import { errorFields, type Logger } from "../log";
import type { RequestTrace, Tracing } from "../tracing/tracing";
import { createAnswers } from "./answers";
import { type ClaimDecision, type DecisionRequest, decideClaims } from "./claim-sql";
import { dropFence, leaseWaitMs, raiseFence } from "./fence";
import { createGroupCommit } from "./group-commit";
import type { IdempotencyKey } from "./idempotency";
import { type ClaimOutcome, claimOutcomes, closedOutcomes } from "./outcomes";

/**
 * One claim (or, with `release`, the release of one) as the route hands it over: what is asked, and
 * by when it must be answered. Claims and releases on a coupon share its queue and its batches. Its
 * Idempotency-Key (`idempotency`) keeps it from memory answers: its decision is stored with it.
 */
export interface ClaimRequest extends DecisionRequest {
  coupon: string;
  /** The request's trace, when tracing is on: its queue wait and its batch are spans of it. */
  trace?: RequestTrace;
  /**
   * performance.now() at arrival; `deadline` is derived from it once, and every wait honours it. The
   * monotonic clock: a host clock stepped by NTP or by hand moves Date.now(), never a deadline.
   */
  arrivedAt: number;
  deadline: number;
}

export interface ClaimResult {
  outcome: ClaimOutcome;
  /** Set when outcome is "created" (the claim's instant) or "released" (the release's). */
  decidedAt?: Date;
  /** The coupon's stock right after this request, when the database decided it. */
  remaining?: number | null;
  /** Seconds to wait before retrying, when the outcome's own Retry-After does not say (sale_not_started). */
  retryAfter?: number;
  /** The decision stored under the request's Idempotency-Key by an earlier request, given again. */
  replayed?: true;
}

export interface ClaimerOptions {
  batchMax: number;
  queueMax: number;
  pendingMax: number;
  /** REQUEST_TIMEOUT_MS: a request's deadline, and the bound on background loads. */
  timeoutMs: number;
  soldOutCacheMax: number;
  soldOutCacheBytes: number;
  /** SCHEDULE_MARGIN_MS: claims this close to an opening are decided by the database. */
  scheduleMarginMs: number;
  /** The change feed that tells what answers from memory must forget; none live = none from memory. */
  feed: ChangeFeed;
  /** How long a claim refused for overload waits before its 503 is sent (never past its deadline). */
  refusalDelayMs: number;
  log: Logger;
  /** The batch decision; replaceable so tests can make it fail or watch it. */
  decide?: typeof decideClaims;
  /** Spans of the queue waits and the batches (tracing/tracing.ts); none by default. */
  tracing?: Tracing;
}

/** What the claim path has done, for the metrics. */
export interface ClaimStats {
  /** Batches sent to the database. */
  batches: number;
  /** Claims answered from memory. */
  fromMemory: number;
  /** Claims and releases sent in those batches (their average size: batched / batches). */
  batched: number;
}

export interface Claimer {
  claimCoupon(request: ClaimRequest): Promise<ClaimResult>;
  /**
   * Announces a change of `couponName` that the caller makes before `deadline` (a PATCH; a release
   * goes through claimCoupon, which does this itself) and waits out the lease (fence.ts): the fence's
   * token for the change's transaction, undefined when there is no such coupon, or "late" when the
   * deadline would pass first (nothing fenced).
   */
  fence(couponName: string, deadline: number): Promise<string | undefined | "late">;
  /** Forgets what is answered from memory for `couponName` (this process changed it). */
  invalidate(couponName: string): void;
  readonly stats: Readonly<ClaimStats>;
  /** Resolves once no claim is waiting or in flight. */
  drain(): Promise<void>;
  readonly pending: number;
}

/** The claim path's queue depth as the metrics read it: pending now, and the bound (PENDING_MAX). */
export function claimQueue(claimer: Pick<Claimer, "pending">, pendingMax: number) {
  return {
    get pending() {
      return claimer.pending;
    },
    pendingMax,
  };
}

/** What a request may carry besides its coupon and user. */
export interface RequestExtras {
  /** performance.now() milliseconds; default now. */
  arrivedAt?: number;
  idempotency?: IdempotencyKey;
  trace?: RequestTrace;
}

/** A claim arriving now (or at `arrivedAt`) with the configured deadline. */
export function claimRequest(
  coupon: string,
  user: string,
  timeoutMs: number,
  extras: RequestExtras = {},
): ClaimRequest {
  const arrivedAt = extras.arrivedAt ?? performance.now();
  const request: ClaimRequest = { coupon, user, arrivedAt, deadline: arrivedAt + timeoutMs };
  if (extras.idempotency) request.idempotency = extras.idempotency;
  if (extras.trace) request.trace = extras.trace;
  return request;
}

/** The release of `user`'s claim on `coupon`, arriving now, with the configured deadline. */
export function releaseRequest(
  coupon: string,
  user: string,
  timeoutMs: number,
  extras: RequestExtras = {},
): ClaimRequest {
  return { ...claimRequest(coupon, user, timeoutMs, extras), release: true };
}

// Shared, frozen results: a flood answered from memory allocates nothing per claim here.
const results = Object.fromEntries(claimOutcomes.map((outcome) => [outcome, Object.freeze({ outcome })])) as Record<
  ClaimOutcome,
  ClaimResult
>;

/** A decision as a result; the seconds to an opening become Retry-After (at least 1). */
function toResult(decision: ClaimDecision): ClaimResult {
  if (decision.opensInMs === undefined) return decision; // as is: no allocation per claim
  return { ...decision, retryAfter: Math.max(1, Math.ceil(decision.opensInMs / 1000)) };
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

/** Creates the claim path of one process; wire one per app. */
export function createClaimer(db: Database, options: ClaimerOptions): Claimer {
  const decide = options.decide ?? decideClaims;
  const { log } = options;
  const tracing = options.tracing;
  // The open queue-wait span of each traced request: ended when its batch is sent, or when it is
  // answered without one (expired, refused).
  const waits = new WeakMap<ClaimRequest, { end(): void }>();
  const endWait = (request: ClaimRequest) => {
    const wait = waits.get(request);
    if (wait) {
      waits.delete(request);
      wait.end();
    }
  };
  const stats: ClaimStats = { batches: 0, fromMemory: 0, batched: 0 };
  const answers = createAnswers(db, {
    feed: options.feed,
    maxClaimers: options.soldOutCacheMax,
    maxBytes: options.soldOutCacheBytes,
    marginMs: options.scheduleMarginMs,
    loadTimeoutMs: options.timeoutMs,
    log,
  });
  // A change announced by any replica: forget, then learn again at once, so the herd waiting for a
  // newly scheduled (or paused) sale is answered from memory from its first claim.
  options.feed.subscribe({
    change(coupon) {
      answers.invalidate(coupon);
      void answers.learn(coupon);
    },
    lost: answers.clear,
  });
  const batches = createGroupCommit<ClaimRequest, ClaimResult>({
    ...options,
    async decide(coupon, requests) {
      stats.batches++;
      stats.batched += requests.length;
      const batch =
        // A request carries a trace only while tracing is on and it was sampled (app.ts).
        tracing && requests.some((request) => request.trace)
          ? await tracing.traceBatch(
              coupon,
              requests.map((request) => {
                endWait(request);
                return request.trace;
              }),
              () => decide(db, coupon, requests),
            )
          : await decide(db, coupon, requests);
      // What was decided now (a replay tells of an earlier moment) says what memory may learn.
      const fresh = batch.decisions.filter((d) => !d.replayed);
      // A release gives stock back: forget at once here (the batch announced it to the other replicas).
      if (fresh.some((d) => d.outcome === "released")) answers.invalidate(coupon);
      else if (batch.remaining === 0 || fresh.some((d) => closedOutcomes.has(d.outcome))) void answers.learn(coupon);
      return batch.decisions.map(toResult);
    },
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

  // A refusal answered at once is a new request at once from a client that ignores Retry-After: a
  // herd of them becomes a flood of instant 503s that takes the event loop from the claims that were
  // admitted. Held for a while, each connection can cost only one refusal per hold.
  let held = 0;
  const paced = (request: ClaimRequest): Promise<ClaimResult> | ClaimResult => {
    const ms = Math.min(options.refusalDelayMs, request.deadline - performance.now());
    if (ms <= 0 || held >= options.pendingMax) return results.overloaded;
    held++;
    return new Promise((resolve) =>
      setTimeout(() => {
        held--;
        resolve(results.overloaded);
      }, ms),
    );
  };

  /** Fences a change of `couponName` (fence.ts): forgotten here at once, heard by every replica. */
  async function fence(couponName: string, deadline: number): Promise<string | undefined | "late"> {
    const token = await raiseFence(db, couponName, deadline);
    answers.invalidate(couponName);
    if (token === undefined) return undefined;
    const wait = leaseWaitMs(options.feed.leaseMs);
    if (performance.now() + wait >= deadline) {
      await dropFence(db, token);
      return "late";
    }
    if (wait > 0) await Bun.sleep(wait);
    return token;
  }

  /** Queues `request` for its coupon's next batch. */
  function enqueue(request: ClaimRequest): Promise<ClaimResult> {
    if (request.trace && tracing) waits.set(request, tracing.startQueueWait(request.trace, request.coupon));
    return batches.submit(request.coupon, request).then((answer) => {
      if (request.trace) endWait(request);
      if (answer === "overloaded") return paced(request);
      return typeof answer === "string" ? results[answer] : answer;
    });
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
        return results.unconfirmed;
      }
      if (token === "late") return results.expired;
      // No such coupon, nothing fenced: the batch answers not_found (stored under a key, if any).
      const result = await enqueue(token === undefined ? request : { ...request, fence: token });
      if (result.outcome !== "expired" || performance.now() >= request.deadline) return result;
    }
  }

  return {
    claimCoupon(request) {
      if (request.release) return release(request);
      // A keyed request goes to the database, which stores its decision (or has one stored).
      const known = request.idempotency ? undefined : answers.answer(request.coupon, request.user);
      if (known) {
        stats.fromMemory++;
        return Promise.resolve(known.retryAfter === undefined ? results[known.outcome] : known);
      }
      return enqueue(request);
    },
    fence,
    invalidate: answers.invalidate,
    stats,
    drain: batches.drain,
    get pending() {
      return batches.pending;
    },
  };
}
