// The project's whole error vocabulary: every failure a client can see is one of these codes,
// rendered as an RFC 9457 problem. Domain code throws AppError and never builds a Response.

export const errorStatus = {
  VALIDATION_FAILED: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  COUPON_NOT_FOUND: 404,
  COUPON_EXISTS: 409,
  ALREADY_CLAIMED: 409,
  SOLD_OUT: 409,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
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
  COUPON_EXISTS: "Coupon already exists",
  ALREADY_CLAIMED: "Coupon already claimed by this user",
  SOLD_OUT: "Coupon sold out",
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

export function toProblem(error: AppError, instance?: string, requestId?: string): Problem {
  return {
    type: `https://coupon-service.dev/problems/${error.code.toLowerCase().replaceAll("_", "-")}`,
    title: titles[error.code],
    status: error.status,
    detail: error.message,
    code: error.code,
    ...(instance ? { instance } : {}),
    ...(requestId ? { request_id: requestId } : {}),
  };
}

/** Renders an AppError as an `application/problem+json` response. */
export function problemResponse(error: AppError, instance?: string, requestId?: string): Response {
  const headers: Record<string, string> = { "content-type": "application/problem+json" };
  if (error.retryAfter !== undefined) headers["retry-after"] = String(error.retryAfter);
  if (error.code === "UNAUTHORIZED") headers["www-authenticate"] = 'Bearer realm="coupon-service"'; // RFC 9110
  if (requestId) headers["x-request-id"] = requestId;
  return new Response(JSON.stringify(toProblem(error, instance, requestId)), {
    status: error.status,
    headers,
  });
}
