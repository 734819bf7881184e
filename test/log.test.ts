import { describe, expect, it } from "bun:test";
import { createLogger, errorFields } from "../src/log";

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
