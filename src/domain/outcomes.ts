// The one table of what a claim, a release or a create can end as. The HTTP edge renders it, metrics
// count it (one label each), the OpenAPI document lists it, and the tests' sequential model speaks it.
// A new rule (a schedule, a pause) is a new row here plus the code that decides it.
import type { ErrorCode } from "./errors";

export interface Rejection {
  code: ErrorCode;
  /** The problem's detail; a function of the coupon's name where the answer names it. */
  detail: string | ((coupon: string) => string);
  /** Seconds, as a Retry-After header. */
  retryAfter?: number;
  /**
   * The answer invites the same request again (later): never stored under an Idempotency-Key, so the
   * retry executes. claim_request_batch_seq (drizzle/0006_seq.sql) lists the ones it decides.
   */
  retry?: true;
}

const table = {
  // Decided by the database (or from memory, when it cannot have changed), checked in this order.
  already_claimed: { code: "ALREADY_CLAIMED", detail: "This user already holds this coupon." },
  sale_paused: { code: "SALE_PAUSED", detail: "The sale is paused; retry later.", retry: true },
  // Retry-After is the time left until the opening, in whole seconds rounded up.
  sale_not_started: {
    code: "SALE_NOT_STARTED",
    detail: "The sale has not started; retry after Retry-After seconds.",
    retry: true,
  },
  sale_ended: { code: "SALE_ENDED", detail: "The sale has ended." },
  sold_out: { code: "SOLD_OUT", detail: "No stock left." },
  not_found: { code: "COUPON_NOT_FOUND", detail: "No such coupon." },
  // A release of a claim the user does not hold.
  claim_not_found: { code: "CLAIM_NOT_FOUND", detail: "This user holds no claim on this coupon." },
  // The Idempotency-Key was used before for another request (another body or route); nothing applied.
  idempotency_key_reused: {
    code: "IDEMPOTENCY_KEY_REUSED",
    detail: "This Idempotency-Key was used for a different request; use a new key for a new request.",
  },
  // A create whose name is taken.
  coupon_exists: {
    code: "COUPON_EXISTS",
    detail: (coupon: string) => `A coupon named ${JSON.stringify(coupon)} already exists.`,
  },
  // Another request with this key was still being decided when this one's deadline came.
  idempotency_key_in_use: {
    code: "IDEMPOTENCY_KEY_IN_USE",
    detail: "A request with this Idempotency-Key is still in progress; retry shortly to get its answer.",
    retryAfter: 1,
    retry: true,
  },
  // Refused before anything was applied.
  overloaded: {
    code: "SERVICE_UNAVAILABLE",
    detail: "Too many claims are waiting; retry shortly.",
    retryAfter: 1,
    retry: true,
  },
  expired: {
    code: "SERVICE_UNAVAILABLE",
    detail: "The claim waited too long for its turn; nothing was applied. Retry shortly.",
    retryAfter: 1,
    retry: true,
  },
  // Sent to the database, but no answer came back in time (or the connection broke): it may have
  // been applied. A retry is safe either way: it answers 201 or ALREADY_CLAIMED.
  unconfirmed: {
    code: "SERVICE_UNAVAILABLE",
    detail: "The claim could not be confirmed; retrying it is safe.",
    retryAfter: 1,
    retry: true,
  },
} as const satisfies Record<string, Rejection>;

export type Rejected = keyof typeof table;
/** Every outcome but `created` and `released` is answered as a problem with this code and detail. */
export const rejections: Readonly<Record<Rejected, Rejection>> = table;
/** What a claim or a release ends as. */
export type ClaimOutcome = "created" | "released" | Exclude<Rejected, "coupon_exists">;
/** What a create ends as. */
export type CreateOutcome = "created" | "coupon_exists" | "idempotency_key_reused" | "idempotency_key_in_use";
/** The outcomes the claim statement itself returns. */
export type DecidedOutcome =
  | "created"
  | "released"
  | "claim_not_found"
  | "already_claimed"
  | "sold_out"
  | "sale_paused"
  | "sale_not_started"
  | "sale_ended"
  | "not_found"
  | "idempotency_key_reused"
  // A release whose fence had expired (store/fences.ts): refused, nothing applied.
  | "expired";

/** Outcomes that say no claim on the coupon can win now: worth learning what may be answered from memory. */
export const closedOutcomes: ReadonlySet<ClaimOutcome> = new Set([
  "sold_out",
  "sale_paused",
  "sale_not_started",
  "sale_ended",
]);

/** Every claim or release outcome, in table order: one metric label each. */
export const claimOutcomes: readonly ClaimOutcome[] = [
  "created",
  "released",
  ...(Object.keys(table) as Rejected[]).filter(
    (outcome): outcome is Exclude<Rejected, "coupon_exists"> => outcome !== "coupon_exists",
  ),
];

/** The rejection's detail for a request on `coupon`. */
export const detailOf = (rejection: Rejection, coupon: string) =>
  typeof rejection.detail === "string" ? rejection.detail : rejection.detail(coupon);

/** The rejections only a release can get, those only a claim can, and those only a keyed request can. */
const releaseOnly: ReadonlySet<Rejected> = new Set(["claim_not_found"]);
const claimOnly: ReadonlySet<Rejected> = new Set([
  "already_claimed",
  "sale_paused",
  "sale_not_started",
  "sale_ended",
  "sold_out",
]);
const keyOnly: ReadonlySet<Rejected> = new Set(["idempotency_key_reused", "idempotency_key_in_use"]);

/** The rejections a claim, a release or (for "key") any keyed request can get: the API documentation's examples. */
export function rejectionsOf(of: "claim" | "release" | "key"): [Rejected, Rejection][] {
  const included = (outcome: Rejected) =>
    outcome !== "coupon_exists" &&
    (of === "key" ? keyOnly.has(outcome) : !(of === "claim" ? releaseOnly : claimOnly).has(outcome));
  return (Object.entries(table) as [Rejected, Rejection][]).filter(([outcome]) => included(outcome));
}
