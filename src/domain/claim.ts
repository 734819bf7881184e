// The vocabulary of a claim, known to every layer and knowing none of them: what is asked (one
// ClaimRequest), what it ends as (a ClaimResult, one member per outcome of outcomes.ts), and the
// Claimer that answers it. The HTTP edge builds requests and renders results; the engine decides them;
// the store speaks their SQL.
import type { Coupon, SaleChange, Schedule } from "./coupon";
import { type ClaimOutcome, type CreateOutcome, claimOutcomes } from "./outcomes";

/** A request's Idempotency-Key, what it must be the same request as, and how long the key lives. */
export interface IdempotencyKey {
  key: string;
  /** SHA-256 of the route and the request's fields. */
  fingerprint: string;
  ttlMs: number;
}

/** A request's trace, when tracing is on and it was sampled: its queue wait and its batch are spans of it. */
export interface Trace {
  readonly traceId: string;
}

/**
 * One claim (or, with `release`, the release of one): what is asked, and by when it must be answered.
 * Claims and releases on a coupon share its queue and its batches.
 */
export interface ClaimRequest {
  coupon: string;
  user: string;
  /** The release of `user`'s claim, rather than a claim. */
  release?: boolean;
  /**
   * performance.now() at arrival; `deadline` is derived from it once, and every wait honours it (the
   * monotonic clock: a host clock stepped by NTP or by hand moves Date.now(), never a deadline).
   */
  arrivedAt: number;
  deadline: number;
  /** Its Idempotency-Key: keeps it from memory answers; its decision is stored with it. */
  idempotency?: IdempotencyKey;
  trace?: Trace;
  /** A release's fence (store/fences.ts), set by the claimer: without a live one the release is refused as expired. */
  fence?: string;
}

/** What each outcome carries besides its name. */
interface OutcomeFields {
  /**
   * The claim's instant, the coupon's stock right after it (null when the database did not say), and
   * its seq: its place among the coupon's winning claims, 1 for the first, never reused (a replay
   * carries the first answer's).
   */
  created: { decidedAt: Date; remaining: number | null; seq: number };
  /** The release's instant, and the coupon's stock right after it. */
  released: { decidedAt: Date; remaining: number };
  /** Seconds to the opening (at least 1): the answer's Retry-After. */
  sale_not_started: { retryAfter: number };
}

/** What a claim or a release ends as: one member per outcome. `replayed`: the decision stored under its key, given again. */
export type ClaimResult = {
  [O in ClaimOutcome]: { outcome: O; replayed?: true } & (O extends keyof OutcomeFields ? OutcomeFields[O] : unknown);
}[ClaimOutcome];

/** The outcomes that carry nothing but their name (and `replayed`). */
export type PlainOutcome = Exclude<ClaimOutcome, keyof OutcomeFields>;

const carriesFields: ReadonlySet<ClaimOutcome> = new Set(["created", "released", "sale_not_started"]);

/**
 * The result of each plain outcome, one shared frozen object each: a flood answered from memory, a
 * batch of refusals or a herd refused for overload allocates nothing per claim.
 */
export const plainResults = Object.fromEntries(
  claimOutcomes
    .filter((outcome) => !carriesFields.has(outcome))
    .map((outcome) => [outcome, Object.freeze({ outcome })]),
) as { readonly [O in PlainOutcome]: Extract<ClaimResult, { outcome: O }> };

/** A coupon to create, with its schedule, arriving at `arrivedAt` with its deadline. */
export interface CreateRequest {
  name: string;
  amount: number;
  schedule: Schedule;
  deadline: number;
  idempotency?: IdempotencyKey;
}

/** What a create ends as; `replayed` when it is the decision stored under its Idempotency-Key. */
export type CreateResult =
  | { outcome: "created"; coupon: Coupon; replayed?: true }
  | { outcome: Exclude<CreateOutcome, "created">; replayed?: true };

/** What the claim path has done, for the metrics. */
export interface ClaimStats {
  /** Batches sent to the database. */
  batches: number;
  /** Claims answered from memory. */
  fromMemory: number;
  /** Claims and releases sent in those batches (their average size: batched / batches). */
  batched: number;
}

/**
 * The one entry of every write that must be decided in turn on its coupon: claims and releases,
 * creates, and changes of a sale. It owns their admission: an Idempotency-Key's turn, the queue
 * bounds, answers from memory, pacing of refusals, all under the request's one deadline.
 */
export interface Claimer {
  claimCoupon(request: ClaimRequest): Promise<ClaimResult>;
  createCoupon(request: CreateRequest): Promise<CreateResult>;
  /**
   * Pauses, resumes or reschedules the sale of `coupon` before `deadline`; every replica stops
   * answering its old state from memory first. COUPON_NOT_FOUND, or SERVICE_UNAVAILABLE when the
   * deadline comes first.
   */
  changeSale(coupon: string, change: SaleChange, deadline: number): Promise<Coupon>;
  readonly stats: Readonly<ClaimStats>;
  /** Claims waiting or in flight in this process. */
  readonly pending: number;
  /** Resolves once no claim is waiting or in flight. */
  drain(): Promise<void>;
}

/** What the claimer asks of tracing (tracing/tracing.ts implements it); nothing while tracing is off. */
export interface ClaimTracing {
  /** A claim's (or release's) wait in its coupon's queue, until its batch is sent or it is answered. */
  startQueueWait(trace: Trace, coupon: string): { end(): void };
  /** Runs one batch's decision inside its spans, linked to the traces of its sampled requests. */
  traceBatch<T>(coupon: string, traces: readonly (Trace | undefined)[], decide: () => Promise<T>): Promise<T>;
}

/** What a request may carry besides its coupon and user. */
export interface RequestExtras {
  /** performance.now() milliseconds; default now. */
  arrivedAt?: number;
  idempotency?: IdempotencyKey;
  trace?: Trace;
}

/** A claim arriving now (or at `arrivedAt`) that must be answered within `timeoutMs`. */
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

/** The release of `user`'s claim on `coupon`, arriving now, that must be answered within `timeoutMs`. */
export function releaseRequest(
  coupon: string,
  user: string,
  timeoutMs: number,
  extras: RequestExtras = {},
): ClaimRequest {
  return { ...claimRequest(coupon, user, timeoutMs, extras), release: true };
}
