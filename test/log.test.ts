import { describe, expect, it } from "bun:test";
import fc from "fast-check";
import { createLogger, errorFields, requestLogLevel } from "../src/log";

describe("createLogger", () => {
  it("writes one JSON line per entry at or above its level", () => {
    const lines: string[] = [];
    const log = createLogger("warn", (line) => lines.push(line));
    log.info("dropped");
    log.warn("kept", { request_id: "r1" });
    log.error("also kept");
    expect(lines.map((l) => JSON.parse(l))).toEqual([
      { time: expect.any(String), level: "warn", msg: "kept", request_id: "r1" },
      { time: expect.any(String), level: "error", msg: "also kept" },
    ]);
  });

  it("writes nothing when silent", () => {
    const lines: string[] = [];
    createLogger("silent", (line) => lines.push(line)).error("nope");
    expect(lines).toEqual([]);
  });
});

describe("errorFields", () => {
  it("keeps the stack of an Error and the text of anything else", () => {
    const fields = errorFields(new Error("boom")) as { err: { message: string; stack: string } };
    expect(fields.err.message).toBe("boom");
    expect(fields.err.stack).toContain("boom");
    expect(errorFields("plain")).toMatchObject({ err: { message: "plain" }, cause: "string: plain" });
  });

  it("names the innermost cause of a failed query, its code and words, without the query's parameters", () => {
    const postgres = Object.assign(new Error("canceling statement due to statement timeout"), {
      severity: "ERROR",
      code: "57014",
    });
    const drizzle = Object.assign(new Error("Failed query: select claim_batch($1, $2)\nparams: big-sale,ann,bob"), {
      query: "select claim_batch($1, $2)",
      params: ["big-sale", ["ann", "bob"]],
      cause: postgres,
    });
    const fields = errorFields(drizzle);
    expect(fields.cause).toBe("PostgresError 57014: canceling statement due to statement timeout");
    expect(fields.err).toMatchObject({
      name: "DrizzleQueryError",
      message: "Failed query: select claim_batch($1, $2)",
    });
    expect(JSON.stringify(fields)).not.toContain("ann");
  });

  it("describes any thrown value in words, never as [object Object]: the check over every error line", () => {
    const thrown = fc.oneof(
      fc.anything(),
      fc.record({ name: fc.constant("ErrnoError"), errno: fc.integer() }),
      fc.anything().map((cause) => new Error("outer", { cause })),
      fc.string().map((message) => Object.assign(new Error(message), { code: "ECONNRESET" })),
    );
    fc.assert(
      fc.property(thrown, (value) => {
        const fields = errorFields(value);
        const line = JSON.stringify(fields);
        expect(typeof fields.cause).toBe("string");
        expect((fields.cause as string).length).toBeGreaterThan(0);
        expect(line).not.toContain("[object Object]");
      }),
      { numRuns: 500 },
    );
  });
});

describe("requestLogLevel", () => {
  it("with all, logs every request at info except probes and docs assets, at debug", () => {
    expect(requestLogLevel("all", "/api/coupons/claim", 409)).toBe("info");
    expect(requestLogLevel("all", "/api/coupons/X", 200)).toBe("info");
    expect(requestLogLevel("all", "/health/ready", 200)).toBe("debug");
    expect(requestLogLevel("all", "/health/live", 503)).toBe("debug");
    expect(requestLogLevel("all", "/docs/assets/swagger-ui.css", 200)).toBe("debug");
    expect(requestLogLevel("all", "/docs", 200)).toBe("info");
  });

  it("with errors, logs only 5xx at info, not the expected 4xx answers", () => {
    expect(requestLogLevel("errors", "/api/coupons/claim", 503)).toBe("info");
    expect(requestLogLevel("errors", "/api/coupons/claim", 500)).toBe("info");
    expect(requestLogLevel("errors", "/api/coupons/claim", 409)).toBeUndefined();
    expect(requestLogLevel("errors", "/api/coupons", 400)).toBeUndefined();
    expect(requestLogLevel("errors", "/api/coupons/claim", 201)).toBeUndefined();
    expect(requestLogLevel("errors", "/health/ready", 503)).toBe("debug");
  });

  it("with none, logs nothing", () => {
    expect(requestLogLevel("none", "/api/coupons/claim", 500)).toBeUndefined();
    expect(requestLogLevel("none", "/health/live", 200)).toBeUndefined();
  });
});
