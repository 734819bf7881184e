// The OpenAPI document of a service with bearer JWTs (AUTH_*): the claim declares the user's JWT, the
// writes ADMIN_TOKEN or a JWT with the admin scope, the reads and probes nothing; every 401, 403 and
// keys 503 it documents is provoked here and is, byte for byte, what the service answers.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { buildApp } from "../support/app";
import { createTestDatabase, type TestDatabase } from "../support/database";
import { type ApiResponse, type Client, client } from "../support/http";
import { startIssuer, type TestIssuer } from "../support/issuer";

type Json = Record<string, any>;

const ADMIN_TOKEN = "s3cret-token-0123456789";
const SCOPE = "coupons:admin";

let database: TestDatabase;
let issuer: TestIssuer;
let down: TestIssuer;
let slow: TestIssuer;
let api: Client;
let doc: Json;

beforeAll(async () => {
  database = await createTestDatabase();
  [issuer, down, slow] = await Promise.all([startIssuer(), startIssuer(), startIssuer()]);
  down.down = true;
  slow.delayMs = 1000;
  api = client(
    buildApp(database.handle.db, { tokens: issuer.verifier({ adminScope: SCOPE }), adminToken: ADMIN_TOKEN }).app,
  );
  doc = (await api.get("/docs/json")).body;
  expect((await api.createCoupon("BLACK_FRIDAY", 10, { authorization: `Bearer ${ADMIN_TOKEN}` })).status).toBe(201);
});
afterAll(async () => {
  await Promise.all([issuer.stop(), down.stop(), slow.stop()]);
  await database.drop();
});

const operations = (document: Json) =>
  Object.entries(document.paths as Json).flatMap(([path, item]) =>
    Object.entries(item as Json).map(([method, operation]) => ({ path, method, operation: operation as Json })),
  );

describe("GET /docs/json with bearer JWTs and AUTH_ADMIN_SCOPE", () => {
  it("declares the user's JWT and the admin JWT as bearer schemes of format JWT, beside adminToken", () => {
    const { securitySchemes } = doc.components;
    expect(Object.keys(securitySchemes)).toEqual(["adminToken", "userJwt", "adminJwt"]);
    for (const name of ["userJwt", "adminJwt"])
      expect(securitySchemes[name]).toMatchObject({ type: "http", scheme: "bearer", bearerFormat: "JWT" });
    expect(securitySchemes.adminJwt.description).toContain(SCOPE);
  });

  it("requires the user's JWT on the claim, ADMIN_TOKEN or the admin JWT on the writes, and nothing elsewhere", () => {
    const writes = ["post /api/coupons", "patch /api/coupons/{name}", "delete /api/coupons/{name}/claims/{user_id}"];
    for (const { path, method, operation } of operations(doc)) {
      const route = `${method} ${path}`;
      const expected =
        route === "post /api/coupons/claim"
          ? [{ userJwt: [] }]
          : writes.includes(route)
            ? [{ adminToken: [] }, { adminJwt: [SCOPE] }]
            : [];
      expect(operation.security, route).toEqual(expected);
      const guarded = expected.length > 0;
      expect(
        Object.keys(operation.responses).filter((s) => s === "401" || s === "403"),
        route,
      ).toEqual(guarded ? ["401", "403"] : []);
    }
  });

  it("says so in the claim's description, and declares WWW-Authenticate on every 401 and on the scope's 403", () => {
    const claim = doc.paths["/api/coupons/claim"].post;
    expect(claim.description).toContain("`sub` equal to `user_id` (else 403 FORBIDDEN_USER)");
    const ref = { $ref: "#/components/headers/WWW-Authenticate" };
    expect(claim.responses[401].headers["WWW-Authenticate"]).toEqual(ref);
    expect(doc.paths["/api/coupons"].post.responses[403].headers["WWW-Authenticate"]).toEqual(ref);
    expect(claim.responses[403].headers["WWW-Authenticate"]).toBeUndefined();
  });
});

describe("GET /docs/json with bearer JWTs and no AUTH_ADMIN_SCOPE", () => {
  it("documents the writes as without JWTs (ADMIN_TOKEN optional) and the claim behind the user's JWT", async () => {
    const withJwts: Json = (
      await client(buildApp(database.handle.db, { tokens: issuer.verifier() }).app).get("/docs/json")
    ).body;
    const without: Json = (await client(buildApp(database.handle.db).app).get("/docs/json")).body;
    expect(Object.keys(withJwts.components.securitySchemes)).toEqual(["adminToken", "userJwt"]);
    for (const [path, method] of [
      ["/api/coupons", "post"],
      ["/api/coupons/{name}", "patch"],
      ["/api/coupons/{name}/claims/{user_id}", "delete"],
    ] as const)
      expect(withJwts.paths[path][method]).toEqual(without.paths[path][method]);
    expect(withJwts.paths["/api/coupons"].post.security).toEqual([{}, { adminToken: [] }]);
    expect(withJwts.paths["/api/coupons/claim"].post.security).toEqual([{ userJwt: [] }]);
  });
});

describe("the documented 401, 403 and keys 503 examples", () => {
  const body = {
    "post /api/coupons": { name: "GUARDED", amount: 1 },
    "post /api/coupons/claim": { user_id: "user-42", coupon_name: "BLACK_FRIDAY" },
    "patch /api/coupons/{name}": { active: false },
  } as Record<string, unknown>;
  const url = {
    "post /api/coupons": "/api/coupons",
    "post /api/coupons/claim": "/api/coupons/claim",
    "patch /api/coupons/{name}": "/api/coupons/BLACK_FRIDAY",
    "delete /api/coupons/{name}/claims/{user_id}": "/api/coupons/BLACK_FRIDAY/claims/user-42",
  } as Record<string, string>;
  const send = (on: Client, route: string, token?: string) => {
    const [method] = route.split(" ") as [string];
    const headers: Record<string, string> = token === undefined ? {} : { authorization: `Bearer ${token}` };
    return on.call(method.toUpperCase(), url[route] as string, { json: body[route], headers });
  };
  const sub = (route: string) => (route.endsWith("claim") ? "user-42" : "ops");
  const withScope = (route: string) => (route.endsWith("claim") ? {} : { scope: SCOPE });

  // The token (or none) that provokes each documented example, by its name.
  const tokens: Record<string, (route: string) => Promise<string | undefined> | string | undefined> = {
    missingToken: () => undefined,
    UNAUTHORIZED: () => undefined,
    notJwt: () => "not-a-jwt",
    algorithm: (route) => issuer.forged.none(sub(route)),
    unknownKey: (route) => issuer.forged.unknownKid(sub(route)),
    signature: (route) => issuer.forged.foreignKey(sub(route)),
    expired: (route) => issuer.mint(sub(route), { expiresIn: -120, claims: withScope(route) }),
    notYetValid: (route) => issuer.mint(sub(route), { notBefore: 120, claims: withScope(route) }),
    otherIssuer: (route) => issuer.mint(sub(route), { issuer: "https://elsewhere.test/" }),
    otherAudience: (route) => issuer.mint(sub(route), { audience: "another-api" }),
    noUser: () => issuer.mint(""),
    FORBIDDEN_USER: () => issuer.mint("user-43"),
    insufficientScope: () => issuer.mint("ops", { claims: { scope: "openid" } }),
  };

  /** Each documented example of the routes' 401, 403 and keys 503 with the answer the service gives. */
  async function provoked(): Promise<[string, Json, ApiResponse][]> {
    const downApi = client(buildApp(database.handle.db, { tokens: down.verifier({ adminScope: SCOPE }) }).app);
    const slowApp = buildApp(database.handle.db, { tokens: slow.verifier({ adminScope: SCOPE }), timeoutMs: 100 });
    const slowApi = client(slowApp.app);
    const examplesOf = (route: string, status: string) => {
      const [method, path] = route.split(" ") as [string, string];
      return Object.entries(
        doc.paths[path][method].responses[status].content["application/problem+json"].examples as Json,
      );
    };
    const routes = Object.keys(url);
    // The keys' 503s first and at once: the slow issuer's one fetch outlasts all of their deadlines.
    const keys = routes.flatMap((route) =>
      examplesOf(route, "503")
        .filter(([name]) => name === "keysUnavailable" || name === "keysLate")
        .map(async ([name, example]): Promise<[string, Json, ApiResponse]> => {
          const token = await slow.mint(sub(route), { claims: withScope(route) });
          const answer = await send(name === "keysUnavailable" ? downApi : slowApi, route, token);
          return [`${route} 503 ${name}`, example.value, answer];
        }),
    );
    const found = await Promise.all(keys);
    for (const route of routes) {
      for (const status of ["401", "403"]) {
        for (const [name, example] of examplesOf(route, status)) {
          const token = tokens[name];
          expect(token, `${route} ${status} ${name}`).toBeDefined();
          found.push([`${route} ${status} ${name}`, example.value, await send(api, route, await token?.(route))]);
        }
      }
    }
    return found;
  }

  it("are byte for byte what the service answers (but the request id), with the challenge the status calls for", async () => {
    const answers = await provoked();
    // Per route: 10 answers of 401, 1 of 403, 2 of the keys' 503.
    expect(answers.length).toBe(4 * 13);
    for (const [key, example, res] of answers) {
      const { request_id: _, ...expected } = example;
      const { request_id: __, ...answered } = res.body;
      expect(JSON.stringify(answered), key).toBe(JSON.stringify(expected));
      const challenge = res.headers.get("www-authenticate");
      if (key.includes(" 401 ")) expect(challenge, key).toStartWith('Bearer realm="coupon-service"');
      if (key.includes("insufficientScope"))
        expect(challenge).toBe('Bearer realm="coupon-service", error="insufficient_scope"');
      if (key.includes(" 503 ")) expect([challenge, res.headers.get("retry-after")], key).toEqual([null, "1"]);
    }
  }, 20_000);
});
