import { describe, expect, it } from "bun:test";
import { loadConfig } from "../src/config";

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

  it("rejects a port out of range and a short admin token", () => {
    expect(() => loadConfig({ PORT: "70000" })).toThrow(/PORT="70000"/);
    expect(() => loadConfig({ ADMIN_TOKEN: "short" })).toThrow(/ADMIN_TOKEN/);
  });
});
