import { describe, expect, it } from "bun:test";
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
    expect(errorFields("plain")).toEqual({ err: { message: "plain" } });
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
