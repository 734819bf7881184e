// The project's whole error vocabulary: every failure a client can see is one of these codes,
// rendered as an RFC 9457 problem. Domain code throws AppError and never builds a Response.

export const errorStatus = {
  VALIDATION_FAILED: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  COUPON_NOT_FOUND: 404,
  CLAIM_NOT_FOUND: 404,
  COUPON_EXISTS: 409,
  ALREADY_CLAIMED: 409,
  SOLD_OUT: 409,
  SALE_PAUSED: 409,
  SALE_NOT_STARTED: 409,
  SALE_ENDED: 409,
  IDEMPOTENCY_KEY_IN_USE: 409,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  IDEMPOTENCY_KEY_REUSED: 422,
  INTERNAL_ERROR: 500,
  SERVICE_UNAVAILABLE: 503,
} as const;

export type ErrorCode = keyof typeof errorStatus;

const titles: Record<ErrorCode, string> = {
  VALIDATION_FAILED: "Request validation failed",
  UNAUTHORIZED: "Authentication required",
  FORBIDDEN: "Not allowed",
  NOT_FOUND: "Not found",
  COUPON_NOT_FOUND: "Coupon not found",
  CLAIM_NOT_FOUND: "Claim not found",
  COUPON_EXISTS: "Coupon already exists",
  ALREADY_CLAIMED: "Coupon already claimed by this user",
  SOLD_OUT: "Coupon sold out",
  SALE_PAUSED: "Sale paused",
  SALE_NOT_STARTED: "Sale not started",
  SALE_ENDED: "Sale ended",
  IDEMPOTENCY_KEY_IN_USE: "Idempotency key in use",
  IDEMPOTENCY_KEY_REUSED: "Idempotency key reused",
  PAYLOAD_TOO_LARGE: "Request body too large",
  UNSUPPORTED_MEDIA_TYPE: "Unsupported media type",
  INTERNAL_ERROR: "Internal server error",
  SERVICE_UNAVAILABLE: "Service temporarily unavailable",
};

/** The one error type domain code throws; `retryAfter` (seconds) becomes a Retry-After header. */
export class AppError extends Error {
  readonly code: ErrorCode;
  readonly retryAfter?: number;
  constructor(code: ErrorCode, detail: string, options?: { retryAfter?: number; cause?: unknown }) {
    super(detail, { cause: options?.cause });
    this.name = "AppError";
    this.code = code;
    this.retryAfter = options?.retryAfter;
  }
  get status(): number {
    return errorStatus[this.code];
  }
}

/** RFC 9457 problem details body, as every error response carries it. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: ErrorCode;
  instance?: string;
  request_id?: string;
}

export function toProblem(code: ErrorCode, detail: string, instance?: string, requestId?: string): Problem {
  return {
    type: `https://coupon-service.dev/problems/${code.toLowerCase().replaceAll("_", "-")}`,
    title: titles[code],
    status: errorStatus[code],
    detail,
    code,
    ...(instance ? { instance } : {}),
    ...(requestId ? { request_id: requestId } : {}),
  };
}

/** Says an answer is the one stored under the request's Idempotency-Key, given again (value "true"). */
export const REPLAYED_HEADER = "idempotent-replayed";

export interface ProblemContext {
  instance?: string;
  requestId?: string;
  retryAfter?: number;
  /** The answer stored under the request's Idempotency-Key, given again: Idempotent-Replayed: true. */
  replayed?: boolean;
}

/**
 * Renders a problem as an `application/problem+json` response: for thrown AppErrors (errorResponse)
 * and for a claim's expected rejections, which are returned, not thrown (no Error, no stack).
 */
export function problemResponse(code: ErrorCode, detail: string, context: ProblemContext = {}): Response {
  const headers: Record<string, string> = { "content-type": "application/problem+json" };
  if (context.retryAfter !== undefined) headers["retry-after"] = String(context.retryAfter);
  if (code === "UNAUTHORIZED") headers["www-authenticate"] = 'Bearer realm="coupon-service"'; // RFC 9110
  if (context.requestId) headers["x-request-id"] = context.requestId;
  if (context.replayed) headers[REPLAYED_HEADER] = "true";
  return new Response(JSON.stringify(toProblem(code, detail, context.instance, context.requestId)), {
    status: errorStatus[code],
    headers,
  });
}

/** Renders a thrown AppError as its problem response. */
export function errorResponse(error: AppError, instance?: string, requestId?: string): Response {
  return problemResponse(error.code, error.message, { instance, requestId, retryAfter: error.retryAfter });
}
