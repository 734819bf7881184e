// Maps every failure Elysia or the domain raises onto the error vocabulary, so a client only ever
// sees an RFC 9457 problem: never Elysia's 422 body, never a plain-text 500, never driver text.
import { Type } from "@sinclair/typebox";
import { type TSchema, t } from "elysia";
import { AppError, type ErrorCode, errorStatus, toProblem } from "../errors";
import { MAX_BODY_BYTES } from "./body";

/**
 * Where a field's schema keeps its own validation message (see describeValidation): a symbol key, so
 * it never reaches the OpenAPI document, whose schemas may only hold OpenAPI/JSON Schema keywords.
 */
export const validationMessage = Symbol("validation message");

/** The problem body as a schema, for the OpenAPI document (documented, not checked per answer). */
export const ProblemSchema = t.Object(
  {
    type: t.String({ format: "uri", description: "URI identifying the problem type" }),
    title: t.String({ description: "Short summary of the problem type" }),
    status: Type.Integer({ minimum: 400, maximum: 599, description: "The HTTP status" }),
    detail: t.String({ description: "What went wrong with this request" }),
    code: t.String({ enum: Object.keys(errorStatus), description: "Stable code to branch on" }),
    instance: t.Optional(t.String({ description: "The request's path" })),
    request_id: t.Optional(t.String({ description: "Also in X-Request-Id and in the request's log line" })),
  },
  { description: "RFC 9457 problem details (application/problem+json)" },
);

const header = (description: string, schema: Record<string, unknown>) => ({ description, schema });
const headers = {
  "X-Request-Id": header(
    "The request's id: the caller's own X-Request-Id when printable and at most 128 characters, else a generated UUID",
    { type: "string" },
  ),
  "Retry-After": header("Seconds to wait before retrying; nothing was applied, or a retry is safe", {
    type: "integer",
    minimum: 0,
  }),
  Location: header("The created coupon's URL", { type: "string", format: "uri-reference" }),
  "Idempotent-Replayed": header(
    "true when this is the answer stored under the request's Idempotency-Key, given again (not executed again)",
    { type: "string", enum: ["true"] },
  ),
  "WWW-Authenticate": header("The bearer challenge (RFC 9110)", { type: "string" }),
};
export type DocumentedHeader = keyof typeof headers;

/** The reusable parts of the OpenAPI document that documentedResponses refers to with $ref. */
export const documentedComponents = { schemas: { Problem: ProblemSchema }, headers };

/** One documented problem answer: its code and the detail the service sends. */
export interface ProblemExample {
  code: ErrorCode;
  detail: string;
}

/** One documented answer: a success body (application/json) or problems (application/problem+json). */
export interface DocumentedResponse {
  description: string;
  schema?: TSchema;
  /** Examples by name; each becomes a full problem body as the service sends it. */
  problems?: Record<string, ProblemExample>;
  headers?: DocumentedHeader[];
}

/** Problems several routes answer, as documented examples (test/http/openapi.test.ts provokes them). */
export const commonProblems = {
  malformedJson: { code: "VALIDATION_FAILED", detail: "body: the request body is not valid JSON." },
  tooLarge: { code: "PAYLOAD_TOO_LARGE", detail: `The request body exceeds ${MAX_BODY_BYTES} bytes.` },
  notJson: { code: "UNSUPPORTED_MEDIA_TYPE", detail: "Send the body as JSON with Content-Type: application/json." },
  internal: { code: "INTERNAL_ERROR", detail: "An unexpected error occurred. It has been logged." },
  databaseUnavailable: { code: "SERVICE_UNAVAILABLE", detail: "The database is unavailable; retry shortly." },
  databaseSlow: { code: "SERVICE_UNAVAILABLE", detail: "The database did not answer in time." },
  bodiesInFlight: {
    code: "SERVICE_UNAVAILABLE",
    detail: "Too many request bodies are being received at once; retry shortly.",
  },
} as const satisfies Record<string, ProblemExample>;

interface ResponseObject {
  description: string;
  headers: Record<string, { $ref: string }>;
  content: Record<
    string,
    { schema?: TSchema | { $ref: string }; examples?: Record<string, { summary: string; value: unknown }> }
  >;
}

// Shown in every problem example; any UUID would do.
const EXAMPLE_REQUEST_ID = "5f0c3a9e-8b1d-4c2e-9a7f-3e6d2b1c0a94";

/**
 * The OpenAPI `responses` of a route at `instance` (an example path). Documented rather than
 * declared as Elysia `response` schemas, which Elysia would check on every answer (the largest cost
 * of answering a sold-out flood) for bodies that this code builds itself. Every answer declares
 * X-Request-Id; every 503 problem Retry-After, every 401 WWW-Authenticate.
 */
export function documentedResponses(instance: string, responses: Record<number, DocumentedResponse>) {
  const documented: Record<string, ResponseObject> = {};
  for (const [status, response] of Object.entries(responses)) {
    const names: DocumentedHeader[] = ["X-Request-Id", ...(response.headers ?? [])];
    if (response.problems && status === "503") names.push("Retry-After");
    if (response.problems && status === "401") names.push("WWW-Authenticate");
    const content: ResponseObject["content"] = response.problems
      ? {
          "application/problem+json": {
            schema: { $ref: "#/components/schemas/Problem" },
            examples: problemExamples(instance, response.problems),
          },
        }
      : { "application/json": { schema: response.schema } };
    documented[status] = {
      description: response.description,
      headers: Object.fromEntries(names.map((name) => [name, { $ref: `#/components/headers/${name}` }])),
      content,
    };
  }
  return documented;
}

function problemExamples(instance: string, problems: Record<string, ProblemExample>) {
  return Object.fromEntries(
    Object.entries(problems).map(([name, { code, detail }]) => [
      name,
      { summary: `${code}: ${detail}`, value: toProblem(code, detail, instance, EXAMPLE_REQUEST_ID) },
    ]),
  );
}

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

/**
 * The AppError for anything thrown while handling a request; undefined for an unexpected failure,
 * which the caller logs and answers with a generic 500.
 */
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
      return new AppError("VALIDATION_FAILED", "body: the request body is not valid JSON.");
    case "NOT_FOUND":
      return new AppError("NOT_FOUND", "No such route.");
    default:
      return undefined;
  }
}
