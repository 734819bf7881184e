// Maps every failure Elysia or the domain raises onto the error vocabulary, so a client only ever
// sees an RFC 9457 problem: never Elysia's 422 body, never a plain-text 500, never driver text.
import { type TSchema, t } from "elysia";
import { AppError, errorStatus } from "../errors";

/** The problem body as a TypeBox schema, for the OpenAPI document (documented, not checked per answer). */
export const ProblemSchema = t.Object(
  {
    type: t.String({ format: "uri", description: "URI identifying the problem type" }),
    title: t.String(),
    status: t.Integer(),
    detail: t.String(),
    code: t.Union(Object.keys(errorStatus).map((code) => t.Literal(code))),
    instance: t.Optional(t.String()),
    request_id: t.Optional(t.String()),
  },
  { description: "RFC 9457 problem details (application/problem+json)" },
);

/**
 * The OpenAPI `responses` of a route, from the same TypeBox schemas: the success body as
 * application/json, every problem as application/problem+json. Documented rather than declared as
 * Elysia `response` schemas, which Elysia would check on every answer (the largest cost of answering
 * a sold-out flood) for bodies that this code builds itself.
 */
export function documentedResponses(
  success: { status: number; description: string; schema: TSchema },
  problems: Record<number, string>,
) {
  const responses: Record<string, { description: string; content: Record<string, { schema: TSchema }> }> = {
    [success.status]: { description: success.description, content: { "application/json": { schema: success.schema } } },
  };
  for (const [status, description] of Object.entries(problems)) {
    responses[status] = { description, content: { "application/problem+json": { schema: ProblemSchema } } };
  }
  return responses;
}

interface ValidationIssue {
  path: string;
  message: string;
  /** A schema may carry its own human message in `error` (Elysia's convention). */
  schema?: { error?: unknown };
}

/** One readable sentence naming each invalid field, e.g. "amount: Expected integer". */
export function describeValidation(where: string, issues: ValidationIssue[]): string {
  const seen = new Map<string, string>();
  for (const issue of issues) {
    const field = issue.path.replace(/^\//, "").replaceAll("/", ".") || where;
    const custom = issue.schema?.error;
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
