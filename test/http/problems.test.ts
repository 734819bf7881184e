import { describe, expect, it } from "bun:test";
import { AppError } from "../../src/domain/errors";
import { detailOf, rejections } from "../../src/domain/outcomes";
import {
  describeValidation,
  errorResponse,
  problemResponse,
  type ResponseSet,
  refusal,
  toAppError,
  toProblem,
} from "../../src/http/problems";

describe("toProblem", () => {
  it("renders an RFC 9457 body whose status matches the code", () => {
    const problem = toProblem("SOLD_OUT", "No stock left.", "/api/coupons/claim", "r1");
    expect(problem).toEqual({
      type: "https://coupon-service.dev/problems/sold-out",
      title: "Coupon sold out",
      status: 409,
      detail: "No stock left.",
      code: "SOLD_OUT",
      instance: "/api/coupons/claim",
      request_id: "r1",
    });
  });
});

describe("errorResponse", () => {
  it("sets the problem content type, Retry-After and the request id", async () => {
    const res = errorResponse(new AppError("SERVICE_UNAVAILABLE", "later", { retryAfter: 2 }), "/x", "rid");
    expect(res.status).toBe(503);
    expect(res.headers.get("content-type")).toBe("application/problem+json");
    expect(res.headers.get("retry-after")).toBe("2");
    expect(res.headers.get("x-request-id")).toBe("rid");
    expect(((await res.json()) as { code: string }).code).toBe("SERVICE_UNAVAILABLE");
  });
});

describe("problemResponse", () => {
  it("renders a rejection without an Error, and asks for credentials on 401", async () => {
    const sold = problemResponse("SOLD_OUT", "No stock left.", { instance: "/api/coupons/claim" });
    expect(sold.status).toBe(409);
    expect(((await sold.json()) as { code: string }).code).toBe("SOLD_OUT");
    expect(problemResponse("UNAUTHORIZED", "token").headers.get("www-authenticate")).toStartWith("Bearer");
  });
});

describe("describeValidation", () => {
  it("names each field once, preferring a schema's own message", () => {
    const text = describeValidation("body", [
      { path: "/name", message: "Expected string to match '^…$'", schema: { error: "must be 1..128 characters" } },
      { path: "/name", message: "another complaint about name" },
      { path: "/amount", message: "Expected integer" },
    ]);
    expect(text).toBe("name: must be 1..128 characters; amount: Expected integer");
  });

  it("falls back to the location when there is no path", () => {
    expect(describeValidation("params", [])).toBe("params: invalid");
  });
});

describe("toAppError", () => {
  it("passes AppErrors through", () => {
    const error = new AppError("COUPON_EXISTS", "taken");
    expect(toAppError("UNKNOWN", error)).toBe(error);
  });

  it("maps Elysia's validation, parse and not-found errors to the vocabulary", () => {
    expect(
      toAppError("VALIDATION", { type: "body", all: [{ path: "/amount", message: "Expected integer" }] })?.code,
    ).toBe("VALIDATION_FAILED");
    expect(toAppError("PARSE", new Error("Bad Request"))?.code).toBe("VALIDATION_FAILED");
    const wrapped = new AppError("UNSUPPORTED_MEDIA_TYPE", "json only");
    expect(toAppError("PARSE", new Error("Bad Request", { cause: wrapped }))).toBe(wrapped);
    expect(toAppError("NOT_FOUND", new Error())?.code).toBe("NOT_FOUND");
  });

  it("still answers VALIDATION_FAILED when listing the issues itself throws", () => {
    const exploding = {
      type: "body",
      get all(): never {
        throw new RangeError("Maximum call stack size exceeded");
      },
    };
    const error = toAppError("VALIDATION", exploding);
    expect([error?.code, error?.message]).toEqual(["VALIDATION_FAILED", "body: invalid"]);
  });

  it("leaves an unexpected error unmapped, for the generic 500", () => {
    expect(toAppError("UNKNOWN", new TypeError("boom"))).toBeUndefined();
  });
});

describe("refusal", () => {
  /** The answer as the framework sends it: the returned body with `set`'s status and headers. */
  const rendered = (body: string, set: ResponseSet) =>
    new Response(body, { status: Number(set.status), headers: set.headers as Record<string, string> });

  it("renders an outcome from the table: its status set for the request log, Retry-After only when a retry can change it", async () => {
    const set: ResponseSet = { headers: { "x-request-id": "r9" } };
    const response = rendered(
      refusal({ outcome: "sale_not_started", retryAfter: 7 }, "SALE", set, "/api/coupons/claim"),
      set,
    );
    expect([set.status, response.status, response.headers.get("retry-after")]).toEqual([409, 409, "7"]);
    expect(await response.json()).toEqual(
      toProblem("SALE_NOT_STARTED", rejections.sale_not_started.detail as string, "/api/coupons/claim", "r9"),
    );
    const replaySet: ResponseSet = { headers: {} };
    const soldOut = rendered(refusal({ outcome: "sold_out", replayed: true }, "SALE", replaySet, "/x"), replaySet);
    expect([soldOut.headers.get("retry-after"), soldOut.headers.get("idempotent-replayed")]).toEqual([null, "true"]);
  });

  it("names the coupon where the outcome's detail does (a create whose name is taken)", () => {
    const body = refusal({ outcome: "coupon_exists" }, "BLACK_FRIDAY", { headers: {} }, "/api/coupons");
    expect((JSON.parse(body) as { detail: string }).detail).toBe('A coupon named "BLACK_FRIDAY" already exists.');
  });

  // refusal writes its answer onto `set` for speed; problemResponse is the one rendering of a problem.
  // Every outcome of the table, replayed or not, with or without a request id: the same status,
  // headers and bytes either way.
  it("answers every refusal exactly as problemResponse renders the same problem", async () => {
    for (const [outcome, rejection] of Object.entries(rejections)) {
      for (const replayed of [undefined, true] as const) {
        for (const requestId of [undefined, "rid-7"]) {
          const set: ResponseSet = { headers: requestId ? { "x-request-id": requestId } : {} };
          const mine = rendered(refusal({ outcome, replayed, retryAfter: 3 }, "C1", set, "/p"), set);
          // The result's own Retry-After (3) wins where a retry can change the answer.
          const reference = problemResponse(rejection.code, detailOf(rejection, "C1"), {
            instance: "/p",
            requestId,
            retryAfter: rejection.retry ? 3 : undefined,
            replayed,
          });
          expect([mine.status, [...mine.headers], await mine.text()]).toEqual([
            reference.status,
            [...reference.headers],
            await reference.text(),
          ]);
        }
      }
    }
  });

  it("throws for a success, so a route that renders one as a refusal answers a logged 500, never a wrong problem", () => {
    expect(() => refusal({ outcome: "created" }, "SALE", { headers: {} }, "/x")).toThrow("created is not a refusal");
  });
});
