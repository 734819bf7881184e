// Releasing a claim (DELETE /api/coupons/{name}/claims/{user_id}) over real HTTP against PostgreSQL:
// the answer's keys, the refusals, names that need URL-encoding, the unit going back to stock and
// the user to the end of claimed_by, memory answers forgotten at once, the admin token, the metrics.
import { describe, expect, it } from "bun:test";
import { serveForSuite } from "../support/app";
import { databaseForSuite } from "../support/database";
import type { ApiResponse, Client } from "../support/http";
import { expectStockInvariant } from "../support/invariant";

const TOKEN = "s3cret-token-0123456789";
const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

const database = databaseForSuite();

const served = serveForSuite(() => database.handle.db);
const api = () => served.api;

const releasePath = (name: string, user: string) =>
  `/api/coupons/${encodeURIComponent(name)}/claims/${encodeURIComponent(user)}`;
const release = (name: string, user: string, on: Client = api(), headers?: Record<string, string>) =>
  on.call("DELETE", releasePath(name, user), { headers });

const expectProblem = (res: ApiResponse, status: number, code: string) => {
  expect(res.headers.get("content-type")).toBe("application/problem+json");
  expect({ status: res.status, code: res.body.code }).toEqual({ status, code });
};

/** A counter of the server's /metrics (the whole line name, labels included). */
async function metric(name: string, on: Client = api()): Promise<number> {
  const text = (await on.get("/metrics")).body as string;
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return Number(line?.split(" ")[1]);
}

/** Sends `claim` until the server answers it from memory (it learns a refusal in the background); 5 s at most. */
async function rememberedAnswer(claim: () => Promise<ApiResponse>): Promise<ApiResponse> {
  for (const deadline = Date.now() + 5_000; Date.now() < deadline; await Bun.sleep(10)) {
    const before = await metric("coupon_claims_from_memory_total");
    const res = await claim();
    if ((await metric("coupon_claims_from_memory_total")) > before) return res;
  }
  throw new Error("no claim was answered from memory within 5 s");
}

/** A coupon of `amount` claimed by `users`, in that order. */
async function claimedBy(name: string, amount: number, users: string[]): Promise<void> {
  expect((await api().createCoupon(name, amount)).status).toBe(201);
  for (const user of users) expect((await api().claim(user, name)).status).toBe(201);
}

describe("DELETE /api/coupons/{name}/claims/{user_id}", () => {
  it("answers 200 with exactly coupon_name, user_id, released_at and remaining_amount", async () => {
    await claimedBy("REL", 3, ["ann", "bob"]);
    const before = Date.now();
    const res = await release("REL", "ann");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toStartWith("application/json");
    expect(Object.keys(res.body).sort()).toEqual(["coupon_name", "released_at", "remaining_amount", "user_id"]);
    expect(res.body).toMatchObject({ coupon_name: "REL", user_id: "ann", remaining_amount: 2 });
    expect(res.body.released_at).toMatch(ISO_MS);
    expect(Date.parse(res.body.released_at)).toBeGreaterThanOrEqual(before - 1000);
    expect(Date.parse(res.body.released_at)).toBeLessThanOrEqual(Date.now() + 1000);
    expect((await api().getCoupon("REL")).body).toEqual({
      name: "REL",
      amount: 3,
      remaining_amount: 2,
      claimed_by: ["bob"],
    });
    const rows = await database.sql`select user_id, coupon_name,
      floor(extract(epoch from released_at) * 1000)::float8 as released_ms from claim_releases where coupon_name = 'REL'`;
    expect([...rows]).toEqual([{ user_id: "ann", coupon_name: "REL", released_ms: Date.parse(res.body.released_at) }]);
    await expectStockInvariant(database.sql, "REL");
  });

  it("answers a second release of the same claim with CLAIM_NOT_FOUND (404), changing nothing", async () => {
    await claimedBy("TWICE", 2, ["ann"]);
    expect((await release("TWICE", "ann")).status).toBe(200);
    const again = await release("TWICE", "ann");
    expectProblem(again, 404, "CLAIM_NOT_FOUND");
    expect(again.body.detail).toBe("This user holds no claim on this coupon.");
    expect((await api().getCoupon("TWICE")).body.remaining_amount).toBe(2);
    expect(await database.sql`select 1 from claim_releases where coupon_name = 'TWICE'`).toHaveLength(1);
  });

  it("answers a release by a user who never claimed with CLAIM_NOT_FOUND (404)", async () => {
    await claimedBy("NEVER", 2, ["ann"]);
    expectProblem(await release("NEVER", "zed"), 404, "CLAIM_NOT_FOUND");
    expect((await api().getCoupon("NEVER")).body).toMatchObject({ remaining_amount: 1, claimed_by: ["ann"] });
  });

  it("answers a release on an unknown coupon with COUPON_NOT_FOUND (404)", async () => {
    const res = await release("NO_SUCH_COUPON", "ann");
    expectProblem(res, 404, "COUPON_NOT_FOUND");
    expect(res.body.detail).toBe("No such coupon.");
  });

  it.each([
    ["slash/inside", "user/with/slashes"],
    ["with space", "user with space"],
    ["ünï 🎟️", "ünï 🎟️ user"],
    ["percent%25", "percent%25user"],
  ])("round-trips the coupon %p and its user verbatim through the URL", async (name, user) => {
    await claimedBy(name, 1, [user]);
    const res = await release(name, user);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ coupon_name: name, user_id: user, remaining_amount: 1 });
    expect((await api().getCoupon(name)).body).toEqual({ name, amount: 1, remaining_amount: 1, claimed_by: [] });
    expect([...(await database.sql`select user_id from claim_releases where coupon_name = ${name}`)]).toEqual([
      { user_id: user },
    ]);
  });

  it.each([
    ["a control character", "%01", "user_id: "],
    ["DEL", "bad%7Fid", "user_id: "],
    ["an invalid percent-encoding", "bad%ZZ", "path: "],
    ["a lone surrogate half", "%ED%A0%80", "path: "],
  ])("refuses a user id with %s with VALIDATION_FAILED (400), releasing nothing", async (_label, encoded, field) => {
    await claimedBy(`BAD_USER ${encoded}`, 1, ["ann"]);
    const coupon = encodeURIComponent(`BAD_USER ${encoded}`);
    const res = await api().call("DELETE", `/api/coupons/${coupon}/claims/${encoded}`);
    expectProblem(res, 400, "VALIDATION_FAILED");
    expect(res.body.detail).toStartWith(field);
    expect((await api().getCoupon(`BAD_USER ${encoded}`)).body.remaining_amount).toBe(0);
  });

  it("lets the user claim again, and puts the re-claim at the end of claimed_by", async () => {
    await claimedBy("RECLAIM", 3, ["ann", "bob", "cid"]);
    expect((await release("RECLAIM", "ann")).body.remaining_amount).toBe(1);
    const again = await api().claim("ann", "RECLAIM");
    expect(again.status).toBe(201);
    expect((await api().getCoupon("RECLAIM")).body).toEqual({
      name: "RECLAIM",
      amount: 3,
      remaining_amount: 0,
      claimed_by: ["bob", "cid", "ann"],
    });
    expect((await api().claim("ann", "RECLAIM")).body.code).toBe("ALREADY_CLAIMED");
    await expectStockInvariant(database.sql, "RECLAIM");
  });

  it("gives the unit back: remaining_amount counts up with each release", async () => {
    await claimedBy("UNITS", 3, ["a", "b", "c"]);
    expect((await api().claim("d", "UNITS")).body.code).toBe("SOLD_OUT");
    const remaining = [];
    for (const user of ["c", "a", "b"]) remaining.push((await release("UNITS", user)).body.remaining_amount);
    expect(remaining).toEqual([1, 2, 3]);
    expect((await api().getCoupon("UNITS")).body).toMatchObject({ remaining_amount: 3, claimed_by: [] });
    await expectStockInvariant(database.sql, "UNITS");
  });

  it("releases whatever the sale's state: paused", async () => {
    await claimedBy("PAUSED_REL", 2, ["ann"]);
    await api().call("PATCH", "/api/coupons/PAUSED_REL", { json: { active: false } });
    const res = await release("PAUSED_REL", "ann");
    expect(res.status).toBe(200);
    expect(res.body.remaining_amount).toBe(2);
    expect((await api().claim("ann", "PAUSED_REL")).body.code).toBe("SALE_PAUSED");
  });

  it("makes a sold-out coupon answered from memory winnable again at once on the same instance", async () => {
    await claimedBy("MEMORY", 2, ["ann", "bob"]);
    let n = 0;
    const remembered = await rememberedAnswer(() => api().claim(`loser-${n++}`, "MEMORY"));
    expect(remembered.body.code).toBe("SOLD_OUT");
    expect((await release("MEMORY", "ann")).status).toBe(200);
    const next = await api().claim("newcomer", "MEMORY");
    expect(next.status).toBe(201);
    expect((await api().getCoupon("MEMORY")).body).toMatchObject({
      remaining_amount: 0,
      claimed_by: ["bob", "newcomer"],
    });
    await expectStockInvariant(database.sql, "MEMORY");
  });

  it("tells a holder remembered from memory that it may claim again once released", async () => {
    await claimedBy("MEMORY_HOLDER", 1, ["ann"]);
    let n = 0;
    await rememberedAnswer(() => api().claim(`loser-${n++}`, "MEMORY_HOLDER"));
    expect((await api().claim("ann", "MEMORY_HOLDER")).body.code).toBe("ALREADY_CLAIMED");
    expect((await release("MEMORY_HOLDER", "ann")).status).toBe(200);
    expect((await api().claim("ann", "MEMORY_HOLDER")).status).toBe(201);
  });

  it("reads no body: a DELETE with content-type application/json and no body is released", async () => {
    await claimedBy("NO_BODY", 1, ["ann"]);
    const res = await release("NO_BODY", "ann", api(), { "content-type": "application/json" });
    expect(res.status).toBe(200);
    expect(res.body.user_id).toBe("ann");
  });

  it('counts coupon_claims_total{outcome="released"} and {outcome="claim_not_found"}', async () => {
    await claimedBy("COUNTED", 2, ["ann", "bob"]);
    const released = () => metric('coupon_claims_total{outcome="released"}');
    const notFound = () => metric('coupon_claims_total{outcome="claim_not_found"}');
    const [releasedBefore, notFoundBefore] = [await released(), await notFound()];
    await release("COUNTED", "ann");
    await release("COUNTED", "bob");
    await release("COUNTED", "ann");
    expect([(await released()) - releasedBefore, (await notFound()) - notFoundBefore]).toEqual([2, 1]);
  });
});

describe("DELETE /api/coupons/{name}/claims/{user_id} with an admin token", () => {
  const guarded = serveForSuite(() => database.handle.db, { adminToken: TOKEN });
  const admin = { authorization: `Bearer ${TOKEN}` };

  it("refuses a release without a bearer token with UNAUTHORIZED (401) and WWW-Authenticate, releasing nothing", async () => {
    await claimedBy("GUARDED_401", 1, ["ann"]);
    const res = await release("GUARDED_401", "ann", guarded.api);
    expectProblem(res, 401, "UNAUTHORIZED");
    expect(res.body.detail).toBe("Changing coupons requires Authorization: Bearer <token>.");
    expect(res.headers.get("www-authenticate")).toBe('Bearer realm="coupon-service"');
    expect((await api().getCoupon("GUARDED_401")).body.claimed_by).toEqual(["ann"]);
  });

  it("refuses a wrong bearer token with FORBIDDEN (403), releasing nothing", async () => {
    await claimedBy("GUARDED_403", 1, ["ann"]);
    const res = await release("GUARDED_403", "ann", guarded.api, { authorization: `Bearer ${TOKEN}x` });
    expectProblem(res, 403, "FORBIDDEN");
    expect(res.body.detail).toBe("The bearer token is not valid for changing coupons.");
    expect((await api().getCoupon("GUARDED_403")).body.claimed_by).toEqual(["ann"]);
  });

  it("releases with the right bearer token (200)", async () => {
    await claimedBy("GUARDED_200", 1, ["ann"]);
    const res = await release("GUARDED_200", "ann", guarded.api, admin);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ coupon_name: "GUARDED_200", user_id: "ann", remaining_amount: 1 });
    expect((await api().getCoupon("GUARDED_200")).body.claimed_by).toEqual([]);
  });

  it("checks the token before looking the coupon up: an unknown coupon without a token is 401", async () => {
    expectProblem(await release("NO_SUCH_GUARDED", "ann", guarded.api), 401, "UNAUTHORIZED");
  });
});
