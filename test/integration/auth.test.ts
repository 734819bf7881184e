// Claims only for oneself (AUTH_*): with an identity provider configured, a claim needs the bearer JWT
// of the user it claims for, checked before the claim is queued; a JWT with the admin scope may create,
// change and release beside ADMIN_TOKEN. Every bad token is a 401 with RFC 6750's challenge, another
// user's a 403 FORBIDDEN_USER, keys that cannot be had a 503. Without the settings nothing changes.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { loadConfig } from "../../src/config";
import { tokenVerifierFrom } from "../../src/identity/tokens";
import { createLogger } from "../../src/log";
import { buildApp } from "../support/app";
import { databaseForSuite } from "../support/database";
import { type ApiResponse, type Client, client } from "../support/http";
import { startIssuer, type TestIssuer } from "../support/issuer";

const ADMIN_TOKEN = "s3cret-token-0123456789";
const ADMIN_SCOPE = "coupons:admin";
const CHALLENGE = 'Bearer realm="coupon-service"';
const INVALID = `${CHALLENGE}, error="invalid_token"`;

const database = databaseForSuite();
let issuer: TestIssuer;
let api: Client;

beforeAll(async () => {
  issuer = await startIssuer();
  // As main.ts builds it: the settings through loadConfig, the verifier from them.
  const config = loadConfig(issuer.settings({ AUTH_ADMIN_SCOPE: ADMIN_SCOPE }));
  const tokens = await tokenVerifierFrom(config, createLogger("silent"));
  const built = buildApp(database.handle.db, { tokens, adminToken: ADMIN_TOKEN });
  api = client(built.app);
  const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };
  for (const [name, amount] of [
    ["HOT", 100],
    ["ONE", 1],
  ] as const)
    expect((await api.createCoupon(name, amount, admin)).status).toBe(201);
});
afterAll(() => issuer.stop());

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const claim = (user: string, coupon: string, headers: Record<string, string> = {}) =>
  api.post("/api/coupons/claim", { user_id: user, coupon_name: coupon }, headers);
const holders = async (coupon: string) =>
  (await database.sql<{ user_id: string }[]>`select user_id from claims where coupon_name = ${coupon} order by id`).map(
    (row) => row.user_id,
  );

function expectProblem(res: ApiResponse, status: number, code: string, challenge?: string) {
  expect({ status: res.status, code: res.body.code, type: res.headers.get("content-type") }).toEqual({
    status,
    code,
    type: "application/problem+json",
  });
  expect(res.headers.get("www-authenticate")).toBe(challenge ?? null);
}

describe("a claim with bearer JWTs configured", () => {
  it("is made for the token's own user: 201", async () => {
    const res = await claim("alice", "HOT", bearer(await issuer.mint("alice")));
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ user_id: "alice", coupon_name: "HOT" });
    expect(await holders("HOT")).toEqual(["alice"]);
  });

  it.each([
    ["no Authorization header", {}],
    ["another scheme", { authorization: "Basic YWxpY2U6c2VjcmV0" }],
    ["an empty bearer token", { authorization: "Bearer " }],
  ])("is refused with %s: 401 UNAUTHORIZED asking for a token (no error code), nothing stored", async (_, headers) => {
    const res = await claim("bob", "HOT", headers);
    expectProblem(res, 401, "UNAUTHORIZED", CHALLENGE);
    expect(res.body.detail).toBe("Claiming a coupon requires Authorization: Bearer <JWT> from the identity provider.");
    expect(await holders("HOT")).not.toContain("bob");
  });

  const badTokens: [string, () => Promise<string> | string][] = [
    ["a malformed token", () => "not.a.jwt"],
    ["ADMIN_TOKEN (not a JWT)", () => ADMIN_TOKEN],
    ["an expired token", () => issuer.mint("bob", { expiresIn: -120 })],
    ["a token not valid yet", () => issuer.mint("bob", { notBefore: 120 })],
    ["a token signed by another key", () => issuer.forged.foreignKey("bob")],
    ["a token with an unknown kid", () => issuer.forged.unknownKid("bob")],
    ["another issuer's token", () => issuer.mint("bob", { issuer: "https://elsewhere.test/" })],
    ["a token for another audience", () => issuer.mint("bob", { audience: "another-api" })],
    ["an alg none token", () => issuer.forged.none("bob")],
    ["an HS256 token signed with the public key", () => issuer.forged.hmacWithPublicKey("bob")],
  ];
  it.each(badTokens)("is refused with %s: 401 UNAUTHORIZED, invalid_token, nothing stored", async (_, token) => {
    const res = await claim("bob", "HOT", bearer(await token()));
    expectProblem(res, 401, "UNAUTHORIZED", INVALID);
    expect(res.body.detail).toStartWith("The bearer token");
    expect(await holders("HOT")).not.toContain("bob");
  });

  it("is refused for another user's token with 403 FORBIDDEN_USER, nothing stored", async () => {
    const res = await claim("carol", "ONE", bearer(await issuer.mint("mallory")));
    expectProblem(res, 403, "FORBIDDEN_USER");
    expect(res.body.detail).toBe("The bearer token is another user's: a token claims only for its own sub.");
    expect(await holders("ONE")).toEqual([]);
  });

  it("is refused for another user even with a token carrying the admin scope", async () => {
    const admin = await issuer.mint("ops", { claims: { scope: ADMIN_SCOPE } });
    expectProblem(await claim("carol", "ONE", bearer(admin)), 403, "FORBIDDEN_USER");
  });

  it("never holds a place in the coupon's queue while its token is checked (a slow key fetch)", async () => {
    // A verifier of its own, with no keys yet: the claim waits for the fetch, outside any queue.
    const fresh = buildApp(database.handle.db, { tokens: issuer.verifier() });
    issuer.delayMs = 300;
    try {
      const pending = client(fresh.app).post(
        "/api/coupons/claim",
        { user_id: "dave", coupon_name: "ONE" },
        bearer(await issuer.mint("dave")),
      );
      await Bun.sleep(100);
      expect(fresh.claimer.pending).toBe(0);
      expect((await pending).status).toBe(201);
    } finally {
      issuer.delayMs = 0;
    }
    expect(await holders("ONE")).toEqual(["dave"]);
  });
});

describe("creating, changing and releasing with bearer JWTs configured", () => {
  const adminJwt = () => issuer.mint("ops", { claims: { scope: `openid ${ADMIN_SCOPE}` } });

  it("accept a JWT with the admin scope: create 201, pause 200, release 200", async () => {
    const headers = bearer(await adminJwt());
    expect((await api.createCoupon("BY_JWT", 2, headers)).status).toBe(201);
    expect((await claim("erin", "BY_JWT", bearer(await issuer.mint("erin")))).status).toBe(201);
    const paused = await api.call("PATCH", "/api/coupons/BY_JWT", { json: { active: false }, headers });
    expect([paused.status, paused.body.active]).toEqual([200, false]);
    const released = await api.call("DELETE", "/api/coupons/BY_JWT/claims/erin", { headers });
    expect([released.status, released.body.remaining_amount]).toEqual([200, 2]);
  });

  it("still accept ADMIN_TOKEN beside JWTs", async () => {
    expect((await api.createCoupon("BY_TOKEN", 1, bearer(ADMIN_TOKEN))).status).toBe(201);
  });

  it("refuse a valid JWT without the admin scope: 403 FORBIDDEN with insufficient_scope, nothing changed", async () => {
    const user = bearer(await issuer.mint("erin", { claims: { scope: "openid" } }));
    const res = await api.createCoupon("BY_USER", 1, user);
    expectProblem(res, 403, "FORBIDDEN", `${CHALLENGE}, error="insufficient_scope"`);
    expect(res.body.detail).toBe("The bearer token lacks the scope coupons:admin needed for creating coupons.");
    const release = await api.call("DELETE", "/api/coupons/HOT/claims/alice", { headers: user });
    expectProblem(release, 403, "FORBIDDEN", `${CHALLENGE}, error="insufficient_scope"`);
    expect(await holders("HOT")).toEqual(["alice"]);
    expect((await api.getCoupon("BY_USER")).status).toBe(404);
  });

  it("refuse a wrong opaque token or a bad JWT with 401 invalid_token, and no token with 401 asking for one", async () => {
    expectProblem(await api.createCoupon("BY_NOBODY", 1, bearer("wrong-token")), 401, "UNAUTHORIZED", INVALID);
    const expired = await issuer.mint("ops", { claims: { scope: ADMIN_SCOPE }, expiresIn: -120 });
    const patch = await api.call("PATCH", "/api/coupons/HOT", { json: { active: false }, headers: bearer(expired) });
    expectProblem(patch, 401, "UNAUTHORIZED", INVALID);
    const none = await api.createCoupon("BY_NOBODY", 1);
    expectProblem(none, 401, "UNAUTHORIZED", CHALLENGE);
    expect(none.body.detail).toBe("Creating coupons requires Authorization: Bearer <token>.");
  });
});

describe("with bearer JWTs configured but no AUTH_ADMIN_SCOPE", () => {
  it("leaves creating to ADMIN_TOKEN: any JWT is a wrong token there (403 FORBIDDEN, as before)", async () => {
    const guarded = client(buildApp(database.handle.db, { tokens: issuer.verifier(), adminToken: ADMIN_TOKEN }).app);
    const jwt = await issuer.mint("ops", { claims: { scope: ADMIN_SCOPE } });
    expectProblem(await guarded.createCoupon("NO_SCOPE", 1, bearer(jwt)), 403, "FORBIDDEN");
    expect((await guarded.createCoupon("NO_SCOPE", 1, bearer(ADMIN_TOKEN))).status).toBe(201);
  });

  it("leaves creating open without ADMIN_TOKEN, as before, while a claim needs its user's JWT", async () => {
    const open = client(buildApp(database.handle.db, { tokens: issuer.verifier() }).app);
    expect((await open.createCoupon("OPEN_WRITES", 1)).status).toBe(201);
    expectProblem(
      await open.post("/api/coupons/claim", { user_id: "kim", coupon_name: "OPEN_WRITES" }),
      401,
      "UNAUTHORIZED",
      CHALLENGE,
    );
  });
});

describe("while the identity provider's keys cannot be had", () => {
  let down: TestIssuer;
  let guarded: Client;
  beforeAll(async () => {
    down = await startIssuer();
    down.down = true;
    const tokens = down.verifier({ adminScope: ADMIN_SCOPE });
    guarded = client(buildApp(database.handle.db, { tokens, timeoutMs: 300 }).app);
  });
  afterAll(() => down.stop());

  it("answers a claim 503 SERVICE_UNAVAILABLE with Retry-After, not 401 or 500, and stores nothing", async () => {
    const res = await guarded.post(
      "/api/coupons/claim",
      { user_id: "frank", coupon_name: "HOT" },
      bearer(await down.mint("frank")),
    );
    expectProblem(res, 503, "SERVICE_UNAVAILABLE");
    expect(res.headers.get("retry-after")).toBe("1");
    expect(res.body.detail).toBe("The identity provider's keys are unavailable; retry shortly.");
    expect(await holders("HOT")).not.toContain("frank");
  });

  it("answers 503 by the request's deadline when the keys are slower than it", async () => {
    down.down = false;
    down.delayMs = 2000;
    const slow = client(buildApp(database.handle.db, { tokens: down.verifier(), timeoutMs: 200 }).app);
    const started = performance.now();
    const res = await slow.post(
      "/api/coupons/claim",
      { user_id: "gina", coupon_name: "HOT" },
      bearer(await down.mint("gina")),
    );
    expectProblem(res, 503, "SERVICE_UNAVAILABLE");
    expect(res.body.detail).toBe("The identity provider's keys did not arrive in time.");
    expect(performance.now() - started).toBeLessThan(1000);
  });
});

describe("without the AUTH_* settings", () => {
  it("answers a spec-shaped claim exactly as before, a bearer JWT or not", async () => {
    const open = client(
      buildApp(database.handle.db, { tokens: await tokenVerifierFrom(loadConfig({}), createLogger("silent")) }).app,
    );
    expect((await open.createCoupon("OPEN", 5)).status).toBe(201);
    for (const [user, headers] of [
      ["henry", {}],
      ["iris", bearer(await issuer.mint("someone-else"))],
      ["jack", { authorization: "Bearer not-a-jwt" }],
    ] as const) {
      const res = await open.post("/api/coupons/claim", { user_id: user, coupon_name: "OPEN" }, headers);
      expect(res.status).toBe(201);
      expect([...res.headers.keys()].sort()).toEqual(["content-type", "x-request-id"]);
      expect(res.headers.get("content-type")).toBe("application/json;charset=utf-8");
      // The spec's fields, then seq (the claim's place, added since, whatever the settings).
      expect(Object.keys(res.body)).toEqual(["user_id", "coupon_name", "claimed_at", "seq"]);
      expect(res.body).toEqual({
        user_id: user,
        coupon_name: "OPEN",
        claimed_at: expect.any(String),
        seq: expect.any(Number),
      });
      expect(new Date(res.body.claimed_at).toISOString()).toBe(res.body.claimed_at);
    }
    expect(await holders("OPEN")).toEqual(["henry", "iris", "jack"]);
  });
});
