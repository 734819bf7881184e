// The OpenAPI side of the HTTP edge: the problem body as a schema, the documented headers, and every
// documented answer with its example problems, built from the same failures and outcomes the service
// sends (test/http/openapi.test.ts provokes each example).
import { Type } from "@sinclair/typebox";
import { type TSchema, t } from "elysia";
import { errorCodes, type Failure, failures } from "../domain/errors";
import { detailOf, type Rejected, type Rejection, rejectionsOf } from "../domain/outcomes";
import { bodyFailures } from "./body";
import { errorStatus, toProblem } from "./problems";

/** The problem body as a schema, for the OpenAPI document (documented, not checked per answer). */
export const ProblemSchema = t.Object(
  {
    type: t.String({ format: "uri", description: "URI identifying the problem type" }),
    title: t.String({ description: "Short summary of the problem type" }),
    status: Type.Integer({ minimum: 400, maximum: 599, description: "The HTTP status" }),
    detail: t.String({ description: "What went wrong with this request" }),
    code: t.String({ enum: [...errorCodes], description: "Stable code to branch on" }),
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
  "Cache-Control": header("How long the answer may be cached", { type: "string" }),
  ETag: header("The answer's version: send it as If-None-Match to get 304 while it has not changed", {
    type: "string",
  }),
};
export type DocumentedHeader = keyof typeof headers;

/** The reusable parts of the OpenAPI document that documentedResponses refers to with $ref. */
export const documentedComponents = { schemas: { Problem: ProblemSchema }, headers };

/** One documented problem answer: its code and the detail the service sends. */
export type ProblemExample = Failure;

/** One documented answer: a success body (application/json) or problems (application/problem+json). */
export interface DocumentedResponse {
  description: string;
  schema?: TSchema;
  /** Examples by name; each becomes a full problem body as the service sends it. */
  problems?: Record<string, ProblemExample>;
  headers?: DocumentedHeader[];
  /** The success body's media type; default application/json. */
  mediaType?: string;
}

/** Problems several routes answer, as documented examples (test/http/openapi.test.ts provokes them). */
export const commonProblems = {
  malformedJson: bodyFailures.malformedJson,
  tooLarge: bodyFailures.tooLarge,
  notJson: bodyFailures.notJson,
  internal: failures.internal,
  databaseUnavailable: failures.databaseUnavailable,
  databaseSlow: failures.databaseSlow,
  bodiesInFlight: bodyFailures.bodiesInFlight,
} as const satisfies Record<string, ProblemExample>;

interface ResponseObject {
  description: string;
  headers: Record<string, { $ref: string }>;
  content?: Record<
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
      : response.schema && { [response.mediaType ?? "application/json"]: { schema: response.schema } };
    documented[status] = {
      description: response.description,
      headers: Object.fromEntries(names.map((name) => [name, { $ref: `#/components/headers/${name}` }])),
      ...(content ? { content } : {}),
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

/**
 * The rejections a claim (or a release, or, for "key", any keyed request) answers with `status`, by
 * outcome, as the problems documented for a request on BLACK_FRIDAY.
 */
export function rejectionsWithStatus(
  status: number,
  of: "claim" | "release" | "key" = "claim",
): Partial<Record<Rejected, Failure>> {
  return Object.fromEntries(
    rejectionsOf(of)
      .filter(([, rejection]) => errorStatus[rejection.code] === status)
      .map(([outcome, rejection]) => [outcome, problemOf(rejection)]),
  );
}

/** A rejection as a documented problem, on a request for BLACK_FRIDAY. */
const problemOf = (rejection: Rejection): Failure => ({
  code: rejection.code,
  detail: detailOf(rejection, "BLACK_FRIDAY"),
});

/** "ALREADY_CLAIMED or SOLD_OUT": the codes answered with `status`, for the API documentation. */
export function codesWithStatus(status: number, of: "claim" | "release" | "key" = "claim"): string {
  const codes = new Set(Object.values(rejectionsWithStatus(status, of)).map((rejection) => rejection.code));
  return [...codes].join(" or ");
}
