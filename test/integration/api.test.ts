// The HTTP contract, status by status, against a real PostgreSQL (in-process through app.handle).
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { buildApp } from "../support/app";
import { createTestDatabase, type TestDatabase } from "../support/database";
import { type Client, client } from "../support/http";

let database: TestDatabase;
let api: Client;
let built: ReturnType<typeof buildApp>;

beforeAll(async () => {
  database = await createTestDatabase();
  built = buildApp(database.handle.db);
  api = client(built.app);
});
afterAll(() => database.drop());

const expectProblem = (res: { status: number; body: any; headers: Headers }, status: number, code: string) => {
  expect(res.status).toBe(status);
  expect(res.headers.get("content-type")).toBe("application/problem+json");
  const { status: bodyStatus, code: bodyCode, type, title, detail } = res.body;
  expect({ status: bodyStatus, code: bodyCode }).toEqual({ status, code });
  for (const text of [type, title, detail]) expect(typeof text === "string" && text.length > 0).toBe(true);
};

describe("POST /api/coupons", () => {
  it("creates a coupon with its full stock and a Location header (201)", async () => {
    const res = await api.createCoupon("WELCOME", 10);
    expect(res.status).toBe(201);
    expect(res.body).toEqual({ name: "WELCOME", amount: 10, remaining_amount: 10 });
    expect(res.headers.get("location")).toBe("/api/coupons/WELCOME");
  });

  it("refuses a taken name with COUPON_EXISTS (409) and keeps the original", async () => {
    await api.createCoupon("TAKEN", 3);
    expectProblem(await api.createCoupon("TAKEN", 99), 409, "COUPON_EXISTS");
    expect((await api.getCoupon("TAKEN")).body.amount).toBe(3);
  });

  it.each([
    ["a string amount", { name: "S1", amount: "10" }, "amount"],
    ["a fractional amount", { name: "S2", amount: 1.5 }, "amount"],
    ["a zero amount", { name: "S3", amount: 0 }, "amount"],
    ["an amount over 2^31-1", { name: "S4", amount: 2147483648 }, "amount"],
    ["a missing name", { amount: 5 }, "name"],
    ["an empty name", { name: "", amount: 5 }, "name"],
    ["a 129-character name", { name: "x".repeat(129), amount: 5 }, "name"],
    ["a NUL in the name", { name: "a\u0000b", amount: 5 }, "name"],
    ["a newline in the name", { name: "a\nb", amount: 5 }, "name"],
    ["an unpaired surrogate in the name", { name: "a\ud800b", amount: 5 }, "name"],
    ["a number as name", { name: 7, amount: 5 }, "name"],
    ['the name "."', { name: ".", amount: 5 }, "name"],
    ['the name ".."', { name: "..", amount: 5 }, "name"],
    ["a JSON array body", [1, 2], "body"],
    ["a JSON null body", null, "body"],
    ["a JSON string body", "coupon", "body"],
  ])("rejects %s with VALIDATION_FAILED naming the field (400)", async (_label, json, field) => {
    const res = await api.call("POST", "/api/coupons", { json });
    expectProblem(res, 400, "VALIDATION_FAILED");
    expect(res.body.detail).toStartWith(`${field}:`);
  });

  it("rejects malformed JSON with VALIDATION_FAILED (400)", async () => {
    const res = await api.call("POST", "/api/coupons", {
      body: '{"name":',
      headers: { "content-type": "application/json" },
    });
    expectProblem(res, 400, "VALIDATION_FAILED");
  });

  it("accepts the largest amount and a 128-character non-ASCII name", async () => {
    const name = "é".repeat(128);
    const res = await api.createCoupon(name, 2147483647);
    expect(res.status).toBe(201);
    expect((await api.getCoupon(name)).body.remaining_amount).toBe(2147483647);
  });

  it("rejects a non-JSON Content-Type with UNSUPPORTED_MEDIA_TYPE (415) and stores nothing", async () => {
    const res = await api.call("POST", "/api/coupons", {
      body: JSON.stringify({ name: "FORM", amount: 1 }),
      headers: { "content-type": "text/plain" },
    });
    expectProblem(res, 415, "UNSUPPORTED_MEDIA_TYPE");
    expectProblem(await api.getCoupon("FORM"), 404, "COUPON_NOT_FOUND");
  });

  it("rejects a body over 8 KiB with PAYLOAD_TOO_LARGE (413)", async () => {
    const res = await api.call("POST", "/api/coupons", {
      body: JSON.stringify({ name: "BIG", amount: 1, pad: "x".repeat(1024 * 1024) }),
      headers: { "content-type": "application/json" },
    });
    expectProblem(res, 413, "PAYLOAD_TOO_LARGE");
  });
});

describe("POST /api/coupons/claim", () => {
  it("claims a coupon (201) and reports when", async () => {
    await api.createCoupon("CLAIM1", 2);
    const res = await api.claim("alice", "CLAIM1");
    expect(res.status).toBe(201);
    expect(res.body).toEqual({ user_id: "alice", coupon_name: "CLAIM1", claimed_at: expect.any(String), seq: 1 });
    expect(Number.isNaN(Date.parse(res.body.claimed_at))).toBe(false);
  });

  it("answers ALREADY_CLAIMED (409) to a second claim by the same user", async () => {
    await api.createCoupon("TWICE", 5);
    await api.claim("bob", "TWICE");
    expectProblem(await api.claim("bob", "TWICE"), 409, "ALREADY_CLAIMED");
    expect((await api.getCoupon("TWICE")).body.remaining_amount).toBe(4);
  });

  it("answers SOLD_OUT (409) once the stock is gone", async () => {
    await api.createCoupon("ONE", 1);
    expect((await api.claim("u1", "ONE")).status).toBe(201);
    expectProblem(await api.claim("u2", "ONE"), 409, "SOLD_OUT");
  });

  it("checks ALREADY_CLAIMED before SOLD_OUT: a holder of a sold-out coupon hears ALREADY_CLAIMED", async () => {
    await api.createCoupon("ORDER", 1);
    await api.claim("holder", "ORDER");
    expectProblem(await api.claim("holder", "ORDER"), 409, "ALREADY_CLAIMED");
    expectProblem(await api.claim("other", "ORDER"), 409, "SOLD_OUT");
  });

  it("answers COUPON_NOT_FOUND (404) for an unknown coupon", async () => {
    expectProblem(await api.claim("u1", "NO_SUCH_COUPON"), 404, "COUPON_NOT_FOUND");
  });

  it("rejects a bad user_id with VALIDATION_FAILED (400) and claims nothing", async () => {
    await api.createCoupon("VALID", 1);
    const res = await api.post("/api/coupons/claim", { user_id: "\u0007bell", coupon_name: "VALID" });
    expectProblem(res, 400, "VALIDATION_FAILED");
    expect(res.body.detail).toStartWith("user_id:");
    expect((await api.getCoupon("VALID")).body.claimed_by).toEqual([]);
  });

  it("rejects a non-JSON Content-Type (415) and claims nothing", async () => {
    await api.createCoupon("FORMCLAIM", 1);
    const res = await api.call("POST", "/api/coupons/claim", {
      body: "user_id=a&coupon_name=FORMCLAIM",
      headers: { "content-type": "application/x-www-form-urlencoded" },
    });
    expectProblem(res, 415, "UNSUPPORTED_MEDIA_TYPE");
    expect((await api.getCoupon("FORMCLAIM")).body.remaining_amount).toBe(1);
  });
});

describe("GET /api/coupons/{name}", () => {
  it("returns exactly name, amount, remaining_amount and claimed_by in claim order", async () => {
    await api.createCoupon("READ", 3);
    for (const user of ["zed", "amy", "kim"]) await api.claim(user, "READ");
    const res = await api.getCoupon("READ");
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ name: "READ", amount: 3, remaining_amount: 0, claimed_by: ["zed", "amy", "kim"] });
  });

  it.each(["with space", "ünïcødé ✓ 🎟️", "slash/inside", "percent%25?#&", "'; drop table coupons; --"])(
    "round-trips the name %p verbatim",
    async (name) => {
      expect((await api.createCoupon(name, 1)).status).toBe(201);
      expect((await api.claim("u", name)).status).toBe(201);
      const res = await api.getCoupon(name);
      expect(res.status).toBe(200);
      expect(res.body).toEqual({ name, amount: 1, remaining_amount: 0, claimed_by: ["u"] });
    },
  );

  it("answers COUPON_NOT_FOUND (404) for an unknown name", async () => {
    expectProblem(await api.getCoupon("MISSING"), 404, "COUPON_NOT_FOUND");
  });
});

describe("the rest of the surface", () => {
  it("answers an unknown route with a NOT_FOUND problem (404)", async () => {
    expectProblem(await api.get("/api/nothing-here"), 404, "NOT_FOUND");
  });

  it("echoes a valid incoming X-Request-Id and invents one otherwise", async () => {
    const echoed = await api.get("/health/live", { "x-request-id": "req-123" });
    expect(echoed.headers.get("x-request-id")).toBe("req-123");
    const invented = await api.get("/health/live", { "x-request-id": "bad id with spaces" });
    expect(invented.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("puts the request id in error bodies", async () => {
    const res = await api.get("/api/coupons/MISSING", { "x-request-id": "trace-me" });
    expect(res.body.request_id).toBe("trace-me");
  });

  it("is live (200) and ready (200) with the database up", async () => {
    expect((await api.get("/health/live")).status).toBe(200);
    const ready = await api.get("/health/ready");
    expect(ready.status).toBe(200);
    expect(ready.body.checks).toEqual({ database: "ok", migrations: "ok" });
  });

  it("serves Prometheus metrics with the request histogram and claim outcomes", async () => {
    const res = await api.get("/metrics");
    expect(res.status).toBe(200);
    expect(res.body).toContain(
      'http_request_duration_seconds_bucket{le="0.001",method="POST",route="/api/coupons/claim",status="201"}',
    );
    expect(res.body).toMatch(
      /http_request_duration_seconds_count\{method="POST",route="\/api\/coupons\/claim",status="409"\} [1-9]/,
    );
    expect(res.body).toMatch(
      /http_request_duration_seconds_count\{method="POST",route="\/api\/coupons\/claim",status="404"\} [1-9]/,
    );
    expect(res.body).toMatch(/coupon_claims_total\{outcome="created"\} [1-9]/);
    expect(res.body).toMatch(/coupon_claims_total\{outcome="sold_out"\} [1-9]/);
    expect(res.body).toMatch(/coupon_claims_total\{outcome="already_claimed"\} [1-9]/);
    expect(res.body).toMatch(/coupon_claims_total\{outcome="not_found"\} [1-9]/);
  });

  it("serves the OpenAPI document generated from the route schemas, errors included", async () => {
    const res = await api.get("/docs/json");
    expect(res.status).toBe(200);
    const claim = res.body.paths["/api/coupons/claim"].post;
    expect(Object.keys(claim.responses)).toEqual(
      expect.arrayContaining(["201", "400", "404", "409", "413", "415", "503"]),
    );
    const create = res.body.paths["/api/coupons"].post;
    expect(Object.keys(create.responses)).toEqual(expect.arrayContaining(["201", "400", "409", "413", "415"]));
    expect(res.body.paths["/api/coupons/{name}"].get.responses).toHaveProperty("404");
  });

  it("serves the docs UI with its assets from the service itself, never from a CDN", async () => {
    const res = await api.get("/docs");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/html");
    const assets = [...(res.body as string).matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1] as string);
    expect(assets.sort()).toEqual(["/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"]);
    for (const asset of assets) {
      const file = await api.get(asset);
      expect(file.status).toBe(200);
      expect((file.body as string).length).toBeGreaterThan(100_000);
    }
    expectProblem(await api.get("/docs/assets/other.js"), 404, "NOT_FOUND");
    // The spec address is absolute, so the page works at /docs/ too.
    expect(res.body).toContain('"url":"/docs/json"');
  });
});
