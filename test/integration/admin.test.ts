// The optional admin token (ADMIN_TOKEN): when set, only a client with the bearer token may create
// coupons; claiming and reading stay open to everyone. Unset, creating needs no header at all.
import { beforeAll, describe, expect, it } from "bun:test";
import { buildApp } from "../support/app";
import { databaseForSuite } from "../support/database";
import { type ApiResponse, type Client, client } from "../support/http";

const TOKEN = "s3cret-token-0123456789";

const database = databaseForSuite();

const expectProblem = (res: ApiResponse, status: number, code: string) => {
  expect(res.status).toBe(status);
  expect(res.headers.get("content-type")).toBe("application/problem+json");
  expect({ status: res.body.status, code: res.body.code }).toEqual({ status, code });
  expect(typeof res.body.detail === "string" && res.body.detail.length > 0).toBe(true);
};

const stored = async (name: string) =>
  (await database.sql<{ n: number }[]>`select count(*)::int as n from coupons where name = ${name}`)[0]?.n;

describe("with an admin token", () => {
  let api: Client;
  beforeAll(() => {
    api = client(buildApp(database.handle.db, { adminToken: TOKEN }).app);
  });

  it("refuses to create a coupon without an Authorization header with UNAUTHORIZED (401) and stores nothing", async () => {
    const res = await api.createCoupon("NO_HEADER", 5);
    expectProblem(res, 401, "UNAUTHORIZED");
    expect(res.headers.get("www-authenticate")).toBe('Bearer realm="coupon-service"');
    expect(await stored("NO_HEADER")).toBe(0);
  });

  it.each([
    ["another scheme", `Basic ${TOKEN}`],
    ["an empty bearer token", "Bearer "],
    ["the bare token without a scheme", TOKEN],
  ])("treats %s as no bearer token: UNAUTHORIZED (401), nothing stored", async (label, authorization) => {
    const name = `NO_BEARER ${label}`;
    expectProblem(await api.createCoupon(name, 5, { authorization }), 401, "UNAUTHORIZED");
    expect(await stored(name)).toBe(0);
  });

  it.each([
    ["a wrong token of the same length", "s3cret-token-0123456780"],
    ["a wrong token that is shorter", "s3cret"],
    ["a wrong token that is longer", `${TOKEN}0`],
    ["the token with different case", TOKEN.toUpperCase()],
  ])("refuses %s with FORBIDDEN (403) and stores nothing", async (label, token) => {
    expect(token).not.toBe(TOKEN);
    const name = `WRONG ${label}`;
    expectProblem(await api.createCoupon(name, 5, { authorization: `Bearer ${token}` }), 403, "FORBIDDEN");
    expect(await stored(name)).toBe(0);
  });

  it("creates a coupon with the right bearer token (201)", async () => {
    const res = await api.createCoupon("WITH_TOKEN", 3, { authorization: `Bearer ${TOKEN}` });
    expect(res.status).toBe(201);
    expect(res.body).toEqual({ name: "WITH_TOKEN", amount: 3, remaining_amount: 3 });
    expect(await stored("WITH_TOKEN")).toBe(1);
  });

  it("accepts the scheme name in any case, as HTTP auth schemes are case-insensitive", async () => {
    const res = await api.createCoupon("LOWER_SCHEME", 1, { authorization: `bearer ${TOKEN}` });
    expect(res.status).toBe(201);
  });

  it("lets anyone claim and read without a token", async () => {
    expect((await api.createCoupon("OPEN", 2, { authorization: `Bearer ${TOKEN}` })).status).toBe(201);
    const claim = await api.claim("walk-in", "OPEN");
    expect(claim.status).toBe(201);
    expect(claim.body.user_id).toBe("walk-in");
    const read = await api.getCoupon("OPEN");
    expect(read.status).toBe(200);
    expect(read.body).toEqual({ name: "OPEN", amount: 2, remaining_amount: 1, claimed_by: ["walk-in"] });
  });

  it("still answers a taken name with COUPON_EXISTS (409) for a client with the token", async () => {
    await api.createCoupon("TWICE", 1, { authorization: `Bearer ${TOKEN}` });
    expectProblem(await api.createCoupon("TWICE", 9, { authorization: `Bearer ${TOKEN}` }), 409, "COUPON_EXISTS");
  });
});

describe("without an admin token", () => {
  it("creates a coupon with no Authorization header (201)", async () => {
    const api = client(buildApp(database.handle.db).app);
    const res = await api.createCoupon("NO_TOKEN_NEEDED", 4);
    expect(res.status).toBe(201);
    expect(res.body).toEqual({ name: "NO_TOKEN_NEEDED", amount: 4, remaining_amount: 4 });
    expect(await stored("NO_TOKEN_NEEDED")).toBe(1);
  });
});
