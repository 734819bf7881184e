import { describe, expect, it } from "bun:test";
import { durationMs, loadConfig } from "../src/config";

describe("loadConfig", () => {
  it("applies the documented defaults to an empty environment", () => {
    const config = loadConfig({});
    expect(config).toMatchObject({
      PORT: 3000,
      HOST: "0.0.0.0",
      LOG_LEVEL: "info",
      DATABASE_POOL_MAX: 10,
      DATA_DIR: "./data",
    });
    expect(config.DATABASE_URL).toBeUndefined();
  });

  it("reads and converts the variables it knows", () => {
    const config = loadConfig({
      DATABASE_URL: "postgres://u@h:5432/d",
      PORT: "8080",
      CLAIM_BATCH_MAX: "1",
      LOG_LEVEL: "warn",
    });
    expect(config).toMatchObject({
      DATABASE_URL: "postgres://u@h:5432/d",
      PORT: 8080,
      CLAIM_BATCH_MAX: 1,
      LOG_LEVEL: "warn",
    });
  });

  it("treats an empty variable as unset", () => {
    expect(loadConfig({ PORT: "", DATABASE_URL: "" })).toMatchObject({ PORT: 3000 });
  });

  it("lists every invalid variable in one error", () => {
    const attempt = () =>
      loadConfig({
        PORT: "abc",
        LOG_LEVEL: "loud",
        DATABASE_POOL_MAX: "0",
        CLAIM_BATCH_MAX: "3.5",
        DATABASE_URL: "mysql://x",
      });
    expect(attempt).toThrow(/Invalid configuration/);
    try {
      attempt();
    } catch (error) {
      const message = String(error);
      for (const name of ["PORT", "LOG_LEVEL", "DATABASE_POOL_MAX", "CLAIM_BATCH_MAX", "DATABASE_URL"]) {
        expect(message).toContain(`${name}=`);
      }
      expect(message).toContain("expected one of debug, info, warn, error, silent");
    }
  });

  it("reads LOG_REQUESTS, all by default, and lists a wrong one with the choices", () => {
    expect(loadConfig({}).LOG_REQUESTS).toBe("all");
    expect(loadConfig({ LOG_REQUESTS: "errors" }).LOG_REQUESTS).toBe("errors");
    expect(() => loadConfig({ LOG_REQUESTS: "some" })).toThrow(
      'LOG_REQUESTS="some": expected one of all, errors, none',
    );
  });

  it("rejects a DATABASE_URL postgres.js cannot parse, or of another scheme, without showing its password", () => {
    for (const url of ["postgres://u:pw-s3cret@h:notaport/d", "mysql://u:pw-s3cret@h/d"]) {
      const attempt = () => loadConfig({ DATABASE_URL: url });
      expect(attempt).toThrow("expected postgres://user:password@host:5432/database");
      expect(attempt).not.toThrow(/s3cret/);
      expect(attempt).toThrow("u:***@h");
    }
    expect(loadConfig({ DATABASE_URL: "postgres://u@h1:5432,h2:5433/d" }).DATABASE_URL).toBe(
      "postgres://u@h1:5432,h2:5433/d",
    );
  });

  it("never shows a rejected admin token", () => {
    expect(() => loadConfig({ ADMIN_TOKEN: "short-s3cret" })).toThrow("ADMIN_TOKEN=<12 characters>");
  });

  it("refuses receipt keys given twice, or a signing key named without keys, never showing RECEIPT_KEYS", () => {
    const both = () => loadConfig({ RECEIPT_KEYS: '{"d":"s3cret"}', RECEIPT_KEYS_FILE: "/keys.json" });
    expect(both).toThrow("RECEIPT_KEYS and RECEIPT_KEYS_FILE: set one of them, not both");
    expect(() => loadConfig({ RECEIPT_SIGNING_KEY: "2026-12" })).toThrow(
      'RECEIPT_SIGNING_KEY="2026-12": names a key, but neither RECEIPT_KEYS nor RECEIPT_KEYS_FILE is set',
    );
    expect(() => loadConfig({ RECEIPT_KEYS: "x", RECEIPT_TTL: "soon" })).toThrow("RECEIPT_KEYS=<1 characters>");
    expect(() => loadConfig({ RECEIPT_TTL: "soon" })).toThrow('RECEIPT_TTL="soon": expected a duration');
    expect(loadConfig({}).RECEIPT_ISSUER).toBe("coupon-service");
  });

  it("keeps Idempotency-Keys for IDEMPOTENCY_TTL, 24h by default", () => {
    expect(loadConfig({}).IDEMPOTENCY_TTL).toBe("24h");
    expect(durationMs(loadConfig({}).IDEMPOTENCY_TTL)).toBe(86_400_000);
  });

  it.each([
    ["500ms", 500],
    ["90s", 90_000],
    ["15m", 900_000],
    ["2h", 7_200_000],
    ["7d", 604_800_000],
  ])("reads IDEMPOTENCY_TTL=%s as %d ms", (value, ms) => {
    const config = loadConfig({ IDEMPOTENCY_TTL: value });
    expect(config.IDEMPOTENCY_TTL).toBe(value);
    expect(durationMs(config.IDEMPOTENCY_TTL)).toBe(ms);
  });

  it.each(["0s", "10", "1.5h", "-1h", "1w"])(
    "refuses IDEMPOTENCY_TTL=%s, saying what a duration looks like",
    (value) => {
      expect(() => loadConfig({ IDEMPOTENCY_TTL: value })).toThrow(
        `IDEMPOTENCY_TTL="${value}": expected a duration: a whole number with ms, s, m, h or d (24h, 90s)`,
      );
    },
  );

  it("sweeps expired Idempotency-Keys every IDEMPOTENCY_SWEEP_MS, a minute by default, at most every 100 ms", () => {
    expect(loadConfig({}).IDEMPOTENCY_SWEEP_MS).toBe(60_000);
    expect(loadConfig({ IDEMPOTENCY_SWEEP_MS: "1000" }).IDEMPOTENCY_SWEEP_MS).toBe(1000);
    expect(() => loadConfig({ IDEMPOTENCY_SWEEP_MS: "10" })).toThrow(/IDEMPOTENCY_SWEEP_MS="10"/);
  });

  it("rejects a port out of range and a short admin token", () => {
    expect(() => loadConfig({ PORT: "70000" })).toThrow(/PORT="70000"/);
    expect(() => loadConfig({ ADMIN_TOKEN: "short" })).toThrow(/ADMIN_TOKEN/);
  });
});
