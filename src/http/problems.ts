// The one HTTP edge of errors: the only place that turns an error code into a status, headers and an
// application/problem+json Response (RFC 9457). Whatever is thrown while handling a request, or
// whatever a claim or create is refused with, is answered from here: never Elysia's 422 body, never a
// plain-text 500, never driver text.
import { AppError, type ErrorCode, fail, failures, type TokenError } from "../domain/errors";
import { detailOf, type Rejection, rejections } from "../domain/outcomes";
import { errorFields, type Logger } from "../log";
import { isDatabaseUnavailable } from "../store/errors";
import { bodyFailures } from "./body";

export const errorStatus: Readonly<Record<ErrorCode, number>> = {
  VALIDATION_FAILED: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  FORBIDDEN_USER: 403,
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
};

const titles: Record<ErrorCode, string> = {
  VALIDATION_FAILED: "Request validation failed",
  UNAUTHORIZED: "Authentication required",
  FORBIDDEN: "Not allowed",
  FORBIDDEN_USER: "Not allowed for this user",
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

/** Each code's problem type URI, e.g. SOLD_OUT -> https://coupon-service.dev/problems/sold-out (built once). */
const problemTypes = Object.fromEntries(
  Object.keys(errorStatus).map((code) => [
    code,
    `https://coupon-service.dev/problems/${code.toLowerCase().replaceAll("_", "-")}`,
  ]),
) as Record<ErrorCode, string>;

export function toProblem(code: ErrorCode, detail: string, instance?: string, requestId?: string): Problem {
  return {
    type: problemTypes[code],
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
  /** Why the bearer token given was refused: the challenge says so (RFC 6750, section 3). */
  tokenError?: TokenError;
}

/** The headers of a problem answer, in the order they are written. */
function problemHeaders(code: ErrorCode, context: ProblemContext): Record<string, string> {
  const headers: Record<string, string> = { "content-type": "application/problem+json" };
  if (context.retryAfter !== undefined) headers["retry-after"] = String(context.retryAfter);
  // RFC 9110's challenge; with RFC 6750's error when a token was given (invalid, or short of a scope).
  if (code === "UNAUTHORIZED" || context.tokenError) {
    const error = context.tokenError ? `, error="${context.tokenError}"` : "";
    headers["www-authenticate"] = `Bearer realm="coupon-service"${error}`;
  }
  if (context.requestId) headers["x-request-id"] = context.requestId;
  if (context.replayed) headers[REPLAYED_HEADER] = "true";
  return headers;
}

/**
 * Renders a problem as an `application/problem+json` response: for thrown AppErrors (errorResponse)
 * and for a claim's expected rejections, which are returned, not thrown (no Error, no stack).
 */
export function problemResponse(code: ErrorCode, detail: string, context: ProblemContext = {}): Response {
  return new Response(JSON.stringify(toProblem(code, detail, context.instance, context.requestId)), {
    status: errorStatus[code],
    headers: problemHeaders(code, context),
  });
}

/** Renders a thrown AppError as its problem response. */
export function errorResponse(error: AppError, instance?: string, requestId?: string): Response {
  const { retryAfter, tokenError } = error;
  return problemResponse(error.code, error.message, { instance, requestId, retryAfter, tokenError });
}

/**
 * Where a field's schema keeps its own validation message (see describeValidation): a symbol key, so
 * it never reaches the OpenAPI document, whose schemas may only hold OpenAPI/JSON Schema keywords.
 */
export const validationMessage = Symbol("validation message");

interface ValidationIssue {
  path: string;
  message: string;
  /** A schema may carry its own human message under validationMessage (or `error`, Elysia's convention). */
  schema?: { [validationMessage]?: unknown; error?: unknown };
}

/** One readable sentence naming each invalid field, e.g. "amount: Expected integer". */
export function describeValidation(where: string, issues: ValidationIssue[]): string {
  const seen = new Map<string, string>();
  for (const issue of issues) {
    const field = issue.path.replace(/^\//, "").replaceAll("/", ".") || where;
    const custom = issue.schema?.[validationMessage] ?? issue.schema?.error;
    if (!seen.has(field)) seen.set(field, typeof custom === "string" ? custom : issue.message);
  }
  return [...seen].map(([field, message]) => `${field}: ${message}`).join("; ") || `${where}: invalid`;
}

/** The AppError for anything Elysia raises or the code throws; undefined for an unexpected failure. */
export function toAppError(code: string | number, error: unknown): AppError | undefined {
  if (error instanceof AppError) return error;
  switch (code) {
    case "VALIDATION": {
      const v = error as { type?: string; all?: ValidationIssue[] };
      try {
        return new AppError("VALIDATION_FAILED", describeValidation(v.type ?? "body", v.all ?? []));
      } catch {
        // Elysia formats the offending value while listing issues; a pathological one can throw there.
        return new AppError("VALIDATION_FAILED", `${v.type ?? "body"}: invalid`);
      }
    }
    case "PARSE":
      // Elysia wraps whatever the body parser threw (415, 413, malformed JSON) in a ParseError.
      if ((error as Error).cause instanceof AppError) return (error as Error).cause as AppError;
      return fail(bodyFailures.malformedJson);
    case "NOT_FOUND":
      return new AppError("NOT_FOUND", "No such route.");
    default:
      return undefined;
  }
}

/**
 * The AppError for anything thrown while handling a request (Elysia's `code` says what kind); a
 * database that cannot serve is a 503, anything unexpected a logged 500. Never throws itself.
 */
export function mapError(
  log: Logger,
  code: string | number,
  error: unknown,
  context: Record<string, unknown>,
): AppError {
  try {
    const mapped = toAppError(code, error);
    if (mapped) return mapped;
    if (isDatabaseUnavailable(error)) {
      log.warn("database unavailable", { ...context, ...errorFields(error) });
      return fail(failures.databaseUnavailable);
    }
    log.error("unhandled error", { ...context, ...errorFields(error) });
  } catch (mappingFailure) {
    log.error("error mapping failed", { ...context, ...errorFields(mappingFailure) });
  }
  return fail(failures.internal);
}

/** What a route's answer may carry: Elysia's `set`, where the status goes too so the request log sees it. */
export type ResponseSet = { status?: number | string; headers: Record<string, string | number | undefined> };

/**
 * A claim's, release's or create's refusal (domain/outcomes.ts) on `coupon` as its problem answer:
 * returned rather than thrown (no Error, no stack on a sold-out flood). Retry-After only on an answer
 * a later retry can change (the table's `retry`): those are never stored under a key, so a replay
 * never lacks it; `retryAfter` is the result's own (sale_not_started). The status and headers go on
 * `set` and the body is returned as text: the same bytes as problemResponse, without a Response the
 * framework would copy again to merge `set` into it (a tenth of a sold-out flood's time went there).
 */
export function refusal(
  result: { outcome: string; replayed?: true; retryAfter?: number },
  coupon: string,
  set: ResponseSet,
  path: string,
): string {
  const rejection = (rejections as Partial<Record<string, Rejection>>)[result.outcome];
  // A success rendered as a refusal is a bug of the route: a logged 500, not a wrong answer.
  if (!rejection) throw new Error(`${result.outcome} is not a refusal`);
  const { code } = rejection;
  const requestId = set.headers["x-request-id"] as string | undefined;
  set.status = errorStatus[code];
  const context: ProblemContext = {
    requestId,
    retryAfter: rejection.retry ? (result.retryAfter ?? rejection.retryAfter) : undefined,
    replayed: result.replayed,
  };
  Object.assign(set.headers, problemHeaders(code, context));
  return JSON.stringify(toProblem(code, detailOf(rejection, coupon), path, requestId));
}

/** Marks a success given again from its Idempotency-Key (a problem carries the header by problemResponse). */
export function markReplayed(set: ResponseSet, replayed: boolean | undefined): void {
  if (replayed) set.headers[REPLAYED_HEADER] = "true";
}
