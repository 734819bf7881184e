// The project's whole error vocabulary: every failure a client can see is one of these codes. Code
// anywhere throws AppError and never builds a response: the HTTP edge (http/problems.ts) alone turns a
// code into a status, headers and an RFC 9457 problem.

export const errorCodes = [
  "VALIDATION_FAILED",
  "UNAUTHORIZED",
  "FORBIDDEN",
  "FORBIDDEN_USER",
  "NOT_FOUND",
  "COUPON_NOT_FOUND",
  "CLAIM_NOT_FOUND",
  "COUPON_EXISTS",
  "ALREADY_CLAIMED",
  "SOLD_OUT",
  "SALE_PAUSED",
  "SALE_NOT_STARTED",
  "SALE_ENDED",
  "IDEMPOTENCY_KEY_IN_USE",
  "PAYLOAD_TOO_LARGE",
  "UNSUPPORTED_MEDIA_TYPE",
  "IDEMPOTENCY_KEY_REUSED",
  "INTERNAL_ERROR",
  "SERVICE_UNAVAILABLE",
] as const;

export type ErrorCode = (typeof errorCodes)[number];

/** Why a bearer token that was given is refused, in RFC 6750's words (its challenge names it). */
export type TokenError = "invalid_token" | "insufficient_scope";

/**
 * The one error type the code throws; `retryAfter` (seconds) says when a retry may succeed, and
 * `tokenError` why a bearer token that was given is refused.
 */
export class AppError extends Error {
  readonly code: ErrorCode;
  readonly retryAfter?: number;
  readonly tokenError?: TokenError;
  constructor(
    code: ErrorCode,
    detail: string,
    options?: { retryAfter?: number; cause?: unknown; tokenError?: TokenError },
  ) {
    super(detail, { cause: options?.cause });
    this.name = "AppError";
    this.code = code;
    this.retryAfter = options?.retryAfter;
    this.tokenError = options?.tokenError;
  }
}

/** A failure with a fixed message: thrown by `fail`, and shown as is in the API documentation. */
export interface Failure {
  code: ErrorCode;
  detail: string;
}

/** The AppError of a failure with a fixed message; a SERVICE_UNAVAILABLE one invites a retry after 1 s. */
export function fail(failure: Failure, cause?: unknown): AppError {
  return failure.code === "SERVICE_UNAVAILABLE"
    ? new AppError(failure.code, failure.detail, { retryAfter: 1, cause })
    : new AppError(failure.code, failure.detail, { cause });
}

/** The failure for an unknown coupon named in the request's path. */
export const couponNotFound = (name: string) =>
  new AppError("COUPON_NOT_FOUND", `No coupon named ${JSON.stringify(name)}.`);

/** The failure for a user who holds no claim on a coupon; `releasedAt` when the claim was released. */
export const claimNotHeld = (releasedAt?: Date) =>
  new AppError(
    "CLAIM_NOT_FOUND",
    releasedAt
      ? `This user's claim on this coupon was released at ${releasedAt.toISOString()}.`
      : "This user holds no claim on this coupon.",
  );

/** Failures that several layers raise, each message written once. */
export const failures = {
  databaseUnavailable: { code: "SERVICE_UNAVAILABLE", detail: "The database is unavailable; retry shortly." },
  databaseSlow: { code: "SERVICE_UNAVAILABLE", detail: "The database did not answer in time." },
  internal: { code: "INTERNAL_ERROR", detail: "An unexpected error occurred. It has been logged." },
  // A change (release or PATCH) whose fence could not stand until it was made: nothing changed.
  tooLateForFence: {
    code: "SERVICE_UNAVAILABLE",
    detail: "The change waited too long for its turn; nothing was changed.",
  },
} as const satisfies Record<string, Failure>;
