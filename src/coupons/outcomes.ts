// The one table of what a claim can end as. Routes render it, metrics count it (one label each), the
// OpenAPI document lists it, and the tests' sequential model speaks it. A new rule (a schedule, a
// pause) is a new row here plus the code that decides it.
import { type ErrorCode, errorStatus } from "../errors";

interface Rejection {
  code: ErrorCode;
  detail: string;
  /** Seconds, as a Retry-After header. */
  retryAfter?: number;
  /**
   * The answer invites the same request again (later): never stored under an Idempotency-Key, so the
   * retry executes. claim_request_batch (drizzle/0004_idempotency.sql) lists the ones it decides.
   */
  retry?: true;
}

const rejections = {
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

export type ClaimRejection = keyof typeof rejections;
/** Every outcome but `created` is answered as a problem with this code and detail. */
export const claimRejections: Readonly<Record<ClaimRejection, Rejection>> = rejections;
export type ClaimOutcome = "created" | "released" | ClaimRejection;
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
  // A release whose fence had expired (coupons/fence.ts): refused, nothing applied.
  | "expired";

/** Outcomes that say no claim on the coupon can win now: worth learning what may be answered from memory. */
export const closedOutcomes: ReadonlySet<ClaimOutcome> = new Set([
  "sold_out",
  "sale_paused",
  "sale_not_started",
  "sale_ended",
]);

export const claimOutcomes: readonly ClaimOutcome[] = [
  "created",
  "released",
  ...(Object.keys(claimRejections) as ClaimRejection[]),
];

/** The rejections only a release can get, and those only a claim can. */
const releaseOnly: ReadonlySet<ClaimRejection> = new Set(["claim_not_found"]);
const claimOnly: ReadonlySet<ClaimRejection> = new Set([
  "already_claimed",
  "sale_paused",
  "sale_not_started",
  "sale_ended",
  "sold_out",
]);

/** The rejections of an Idempotency-Key, which any keyed request (a create too) can get. */
const keyOnly: ReadonlySet<ClaimRejection> = new Set(["idempotency_key_reused", "idempotency_key_in_use"]);

/**
 * The rejections a claim (or a release, or, for "key", any keyed request) answers with `status`, by
 * outcome: the API documentation's examples.
 */
export function rejectionsWithStatus(
  status: number,
  of: "claim" | "release" | "key" = "claim",
): Partial<Record<ClaimRejection, Rejection>> {
  const included = (outcome: ClaimRejection) =>
    of === "key" ? keyOnly.has(outcome) : !(of === "claim" ? releaseOnly : claimOnly).has(outcome);
  return Object.fromEntries(
    Object.entries(claimRejections).filter(
      ([outcome, rejection]) => errorStatus[rejection.code] === status && included(outcome as ClaimRejection),
    ),
  );
}

/** "ALREADY_CLAIMED or SOLD_OUT": the codes answered with `status`, for the API documentation. */
export function codesWithStatus(status: number, of: "claim" | "release" | "key" = "claim"): string {
  const codes = new Set(Object.values(rejectionsWithStatus(status, of)).map((rejection) => rejection.code));
  return [...codes].join(" or ");
}
