// The AUTH_* settings: unset by default (claims open as ever); an issuer, an audience and one source of
// keys together or not at all, every missing piece named in the one start-up error; a JWKS URL's
// password never shown; a JWKS file that is not a usable key set stops the start.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { writeFileSync } from "node:fs";
import { loadConfig } from "../src/config";
import { tokenVerifierFrom } from "../src/identity/tokens";
import { createLogger } from "../src/log";
import { createTestDatabase } from "./support/database";
import { AUDIENCE, ISSUER, startIssuer, type TestIssuer } from "./support/issuer";
import { runToExit, startService } from "./support/service";

const complete = { AUTH_ISSUER: ISSUER, AUTH_AUDIENCE: AUDIENCE, AUTH_JWKS_URL: "https://id.example/jwks.json" };

/** The problems loadConfig lists for `env` (fails the test when it accepts it). */
function problems(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
  } catch (error) {
    return String((error as Error).message)
      .split("\n  - ")
      .slice(1);
  }
  throw new Error("loadConfig accepted the settings");
}

describe("the AUTH_* settings", () => {
  it("are all unset by default, and then no verifier is made", async () => {
    const config = loadConfig({});
    for (const key of ["AUTH_ISSUER", "AUTH_AUDIENCE", "AUTH_JWKS_URL", "AUTH_JWKS_FILE", "AUTH_ADMIN_SCOPE"])
      expect(config[key as keyof typeof config]).toBeUndefined();
    expect(await tokenVerifierFrom(config, createLogger("silent"))).toBeUndefined();
  });

  it("are read together, with an admin scope", () => {
    expect(loadConfig({ ...complete, AUTH_ADMIN_SCOPE: "coupons:admin" })).toMatchObject({
      ...complete,
      AUTH_ADMIN_SCOPE: "coupons:admin",
    });
  });

  it("refuse an issuer without keys, naming what is missing", () => {
    expect(problems({ AUTH_ISSUER: ISSUER, AUTH_AUDIENCE: AUDIENCE })).toEqual([
      "AUTH_ISSUER and AUTH_AUDIENCE are set without AUTH_JWKS_URL or AUTH_JWKS_FILE (the issuer's keys): bearer tokens need an issuer, an audience and keys together",
    ]);
  });

  it("refuse keys without an issuer and an audience", () => {
    expect(problems({ AUTH_JWKS_FILE: "/etc/jwks.json" })).toEqual([
      "AUTH_JWKS_FILE is set without AUTH_ISSUER (the tokens' iss) and without AUTH_AUDIENCE (the tokens' aud): bearer tokens need an issuer, an audience and keys together",
    ]);
  });

  it("refuse an admin scope alone, and both sources of keys at once, in the same error as other settings", () => {
    expect(problems({ AUTH_ADMIN_SCOPE: "coupons:admin", PORT: "x" })).toEqual([
      'PORT="x": Expected integer',
      "AUTH_ADMIN_SCOPE is set without AUTH_ISSUER (the tokens' iss) and without AUTH_AUDIENCE (the tokens' aud) and without AUTH_JWKS_URL or AUTH_JWKS_FILE (the issuer's keys): bearer tokens need an issuer, an audience and keys together",
    ]);
    expect(problems({ ...complete, AUTH_JWKS_FILE: "/etc/jwks.json" })).toEqual([
      "AUTH_JWKS_URL and AUTH_JWKS_FILE are both set: the keys come from one of them",
    ]);
  });

  it("refuse a JWKS URL that is not http(s), without showing its password", () => {
    for (const url of ["ftp://svc:pw-s3cret@id.example/jwks", "https://svc:pw-s3cret@[id/jwks"]) {
      const [problem] = problems({ ...complete, AUTH_JWKS_URL: url });
      expect(problem).toContain("expected an http(s) URL");
      expect(problem).toContain("svc:***@");
      expect(problem).not.toContain("s3cret");
    }
  });

  it("refuse an admin scope that is not one scope token", () => {
    expect(problems({ ...complete, AUTH_ADMIN_SCOPE: "coupons admin" })).toEqual([
      'AUTH_ADMIN_SCOPE="coupons admin": expected one scope: printable ASCII without spaces, " or \\',
    ]);
  });
});

describe("starting the service with AUTH_* settings", () => {
  let issuer: TestIssuer;
  beforeAll(async () => {
    issuer = await startIssuer();
  });
  afterAll(() => issuer.stop());

  it("fetches the issuer's keys at start, logs what it checks, and then claims need their user's JWT", async () => {
    const database = await createTestDatabase();
    const service = await startService({ DATABASE_URL: database.url, ...issuer.settings() });
    try {
      const logs = service.logs();
      expect(logs.find((line) => line.msg === "claims need a bearer JWT")).toMatchObject({
        issuer: ISSUER,
        audience: AUDIENCE,
        keys: "AUTH_JWKS_URL",
      });
      expect(logs.find((line) => line.level === "warn")?.msg).toBe(
        "creating, changing and releasing coupons are open: set ADMIN_TOKEN or AUTH_ADMIN_SCOPE",
      );
      expect((await service.api.createCoupon("STARTED", 1)).status).toBe(201);
      const body = { user_id: "user-1", coupon_name: "STARTED" };
      expect((await service.api.post("/api/coupons/claim", body)).status).toBe(401);
      const token = await issuer.mint("user-1");
      expect((await service.api.post("/api/coupons/claim", body, { authorization: `Bearer ${token}` })).status).toBe(
        201,
      );
      expect(issuer.fetches).toBe(1);
    } finally {
      service.child.kill("SIGTERM");
      await service.child.exited;
      await database.drop();
    }
  });

  it("stops with exit 1 and the one configuration error when the keys are missing", async () => {
    const run = await runToExit([], { AUTH_ISSUER: ISSUER });
    expect(run.code).toBe(1);
    const [line] = run.logs;
    expect(line?.level).toBe("error");
    expect(line?.msg).toStartWith("Invalid configuration:\n  - AUTH_ISSUER is set without AUTH_AUDIENCE");
  });

  it("stops with exit 1 on a malformed JWKS file, naming the file and what is wrong, before any database", async () => {
    const file = issuer.jwksFile();
    writeFileSync(file, JSON.stringify({ keys: [{ kty: "oct", k: "c2VjcmV0", kid: "shared" }] }));
    const run = await runToExit([], {
      AUTH_ISSUER: ISSUER,
      AUTH_AUDIENCE: AUDIENCE,
      AUTH_JWKS_FILE: file,
      DATABASE_URL: "postgres://nobody@127.0.0.1:1/none",
    });
    expect(run.code).toBe(1);
    expect(run.logs.map((line) => line.msg)).toEqual([
      `Invalid configuration:\n  - AUTH_JWKS_FILE=${JSON.stringify(file)}: key 0 (kid "shared") is a symmetric key; only public keys may be published`,
    ]);
  });
});
