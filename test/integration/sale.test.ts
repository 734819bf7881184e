// A sale's schedule and pause, and the coupon list, over real HTTP against PostgreSQL: what the answers
// carry (and, for a plain coupon, what they still do not), what is refused and with which field named,
// the claim rules a change brings in, the admin token on PATCH, and in SQL that no claim ever won
// outside [starts_at, ends_at).
import { beforeAll, describe, expect, it } from "bun:test";
import { serveForSuite } from "../support/app";
import { databaseForSuite } from "../support/database";
import type { ApiResponse, Client } from "../support/http";
import { expectStockInvariant } from "../support/invariant";

const TOKEN = "s3cret-token-0123456789";
const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

const database = databaseForSuite();

const served = serveForSuite(() => database.handle.db);
const api = () => served.api;

const create = (json: unknown, on: Client = api(), headers?: Record<string, string>) =>
  on.post("/api/coupons", json, headers);
const patch = (name: string, json: unknown, on: Client = api(), headers?: Record<string, string>) =>
  on.call("PATCH", `/api/coupons/${encodeURIComponent(name)}`, { json, headers });
const fromNow = (ms: number) => new Date(Date.now() + ms).toISOString();

const expectProblem = (res: ApiResponse, status: number, code: string) => {
  expect(res.headers.get("content-type")).toBe("application/problem+json");
  expect({ status: res.status, code: res.body.code }).toEqual({ status, code });
};

/** The coupon as GET answers it, for "nothing changed" checks. */
const read = async (name: string) => (await api().getCoupon(name)).body;

/** Claims the server has answered from memory so far, as its /metrics counts them. */
const fromMemory = async () =>
  Number(/^coupon_claims_from_memory_total (\d+)$/m.exec((await api().get("/metrics")).body)?.[1]);

/** Sends `claim` until the server answers it from memory (it learns a refusal in the background); 5 s at most. */
async function rememberedAnswer(claim: () => Promise<ApiResponse>): Promise<ApiResponse> {
  for (const deadline = Date.now() + 5_000; Date.now() < deadline; await Bun.sleep(10)) {
    const before = await fromMemory();
    const res = await claim();
    if ((await fromMemory()) > before) return res;
  }
  throw new Error("no claim was answered from memory within 5 s");
}

describe("POST /api/coupons with a schedule", () => {
  it("answers starts_at and ends_at in UTC with milliseconds, offsets converted, and reads them back", async () => {
    const res = await create({
      name: "OFFSETS",
      amount: 2,
      starts_at: "2026-11-27T10:00:00+01:00",
      ends_at: "2026-11-27T21:30:00.5-05:30",
    });
    const answer = {
      name: "OFFSETS",
      amount: 2,
      remaining_amount: 2,
      starts_at: "2026-11-27T09:00:00.000Z",
      ends_at: "2026-11-28T03:00:00.500Z",
    };
    expect(res.status).toBe(201);
    expect(res.body).toEqual(answer);
    expect(await read("OFFSETS")).toEqual({ ...answer, claimed_by: [] });
    const [row] = await database.sql`select starts_at = '2026-11-27T09:00:00Z'::timestamptz as starts,
      ends_at = '2026-11-28T03:00:00.5Z'::timestamptz as ends from coupons where name = 'OFFSETS'`;
    expect(row).toEqual({ starts: true, ends: true });
  });

  it("truncates fractional seconds to milliseconds, and carries only the bound it was given", async () => {
    const res = await create({ name: "FRACTION", amount: 1, starts_at: "2030-01-01t00:00:00.123999z" });
    expect(res.body).toEqual({
      name: "FRACTION",
      amount: 1,
      remaining_amount: 1,
      starts_at: "2030-01-01T00:00:00.123Z",
    });
    const [row] = await database.sql`select (extract(epoch from starts_at) * 1000)::float8 as ms, ends_at
      from coupons where name = 'FRACTION'`;
    expect(row).toEqual({ ms: Date.parse("2030-01-01T00:00:00.123Z"), ends_at: null });
  });

  it("accepts February 29 of a leap year", async () => {
    const res = await create({ name: "LEAP", amount: 1, ends_at: "2028-02-29T12:00:00Z" });
    expect(res.status).toBe(201);
    expect(res.body.ends_at).toBe("2028-02-29T12:00:00.000Z");
  });

  it.each([
    ["no offset", "starts_at", "2026-11-27T09:00:00"],
    ["a date without a time", "ends_at", "2026-11-27"],
    ["a space for the T", "starts_at", "2026-11-27 09:00:00Z"],
    ["February 30", "starts_at", "2026-02-30T09:00:00Z"],
    ["February 29 of a common year", "ends_at", "2027-02-29T09:00:00Z"],
    ["month 13", "starts_at", "2026-13-01T09:00:00Z"],
    ["the hour 24", "starts_at", "2026-11-27T24:00:00Z"],
    ["minute 60", "ends_at", "2026-11-27T09:60:00Z"],
    ["an offset of 24 hours", "ends_at", "2026-11-27T09:00:00+24:00"],
    ["an offset minute over 59", "starts_at", "2026-11-27T09:00:00+01:60"],
    ["an offset without its colon", "starts_at", "2026-11-27T09:00:00+0100"],
    ["epoch milliseconds", "starts_at", 1_795_770_000_000],
    ["null", "ends_at", null],
  ])(
    "refuses %s as an instant with VALIDATION_FAILED naming the field (400), storing nothing",
    async (label, field, value) => {
      const name = `BAD_INSTANT ${label}`;
      const res = await create({ name, amount: 1, [field]: value });
      expectProblem(res, 400, "VALIDATION_FAILED");
      expect(res.body.detail).toStartWith(`${field}: `);
      expect(await database.sql`select 1 from coupons where name = ${name}`).toHaveLength(0);
    },
  );

  it.each([
    ["before starts_at", "2026-11-27T09:00:00Z", "2026-11-27T08:59:59.999Z"],
    ["at starts_at, written with another offset", "2026-11-27T10:00:00+01:00", "2026-11-27T09:00:00Z"],
  ])("refuses ends_at %s with VALIDATION_FAILED (400)", async (_label, starts_at, ends_at) => {
    const res = await create({ name: "BACKWARDS", amount: 1, starts_at, ends_at });
    expectProblem(res, 400, "VALIDATION_FAILED");
    expect(res.body.detail).toBe("ends_at: must be after starts_at");
    expect(await database.sql`select 1 from coupons where name = 'BACKWARDS'`).toHaveLength(0);
  });
});

describe("requests shaped as before the schedule", () => {
  it("answer create, claim and read with exactly the keys they always had", async () => {
    const created = await api().createCoupon("PLAIN", 2);
    expect(created.body).toEqual({ name: "PLAIN", amount: 2, remaining_amount: 2 });
    expect(Object.keys(created.body)).toEqual(["name", "amount", "remaining_amount"]);
    const claimed = await api().claim("user-1", "PLAIN");
    expect(claimed.status).toBe(201);
    expect(claimed.body).toEqual({
      user_id: "user-1",
      coupon_name: "PLAIN",
      claimed_at: expect.stringMatching(ISO_MS),
      seq: 1,
    });
    // The spec's fields first, in their order; seq (the claim's place, added since) after them.
    expect(Object.keys(claimed.body)).toEqual(["user_id", "coupon_name", "claimed_at", "seq"]);
    const got = await api().getCoupon("PLAIN");
    expect(got.body).toEqual({ name: "PLAIN", amount: 2, remaining_amount: 1, claimed_by: ["user-1"] });
    expect(Object.keys(got.body)).toEqual(["name", "amount", "remaining_amount", "claimed_by"]);
  });
});

describe("PATCH /api/coupons/{name}", () => {
  it("pauses a sale: SALE_PAUSED to newcomers, ALREADY_CLAIMED to a holder, and 201 again once resumed", async () => {
    await api().createCoupon("PAUSE", 5);
    expect((await api().claim("holder", "PAUSE")).status).toBe(201);
    const paused = await patch("PAUSE", { active: false });
    expect(paused.status).toBe(200);
    expect(paused.body).toEqual({ name: "PAUSE", amount: 5, remaining_amount: 4, active: false });
    // By the database first, then from memory once its refusal is learnt: the same answers either way.
    const refused = await api().claim("newcomer", "PAUSE");
    expectProblem(refused, 409, "SALE_PAUSED");
    expect(refused.headers.get("retry-after")).toBeNull();
    expectProblem(await api().claim("holder", "PAUSE"), 409, "ALREADY_CLAIMED");
    expectProblem(await rememberedAnswer(() => api().claim("newcomer", "PAUSE")), 409, "SALE_PAUSED");
    expectProblem(await rememberedAnswer(() => api().claim("holder", "PAUSE")), 409, "ALREADY_CLAIMED");
    expect(await read("PAUSE")).toEqual({
      name: "PAUSE",
      amount: 5,
      remaining_amount: 4,
      active: false,
      claimed_by: ["holder"],
    });
    const resumed = await patch("PAUSE", { active: true });
    expect(resumed.body).toEqual({ name: "PAUSE", amount: 5, remaining_amount: 4 });
    expect((await api().claim("newcomer", "PAUSE")).status).toBe(201);
    expect(await read("PAUSE")).toEqual({
      name: "PAUSE",
      amount: 5,
      remaining_amount: 3,
      claimed_by: ["holder", "newcomer"],
    });
  });

  it("moves the opening into the future: SALE_NOT_STARTED with Retry-After the seconds left; null opens it", async () => {
    await api().createCoupon("LATER", 3);
    const opensAt = Date.now() + 30_000;
    const moved = await patch("LATER", { starts_at: new Date(opensAt).toISOString() });
    expect(moved.body).toEqual({
      name: "LATER",
      amount: 3,
      remaining_amount: 3,
      starts_at: new Date(opensAt).toISOString(),
    });
    const early = () => api().claim("early", "LATER");
    for (const claim of [early, () => rememberedAnswer(early)]) {
      const before = Date.now();
      const res = await claim();
      const after = Date.now();
      expectProblem(res, 409, "SALE_NOT_STARTED");
      // Whole seconds rounded up, by the database's clock (this host's, give or take a second).
      const retryAfter = Number(res.headers.get("retry-after"));
      expect(retryAfter).toBeGreaterThanOrEqual(Math.ceil((opensAt - after) / 1000) - 1);
      expect(retryAfter).toBeLessThanOrEqual(Math.ceil((opensAt - before) / 1000) + 1);
    }
    const opened = await patch("LATER", { starts_at: null });
    expect(opened.body).toEqual({ name: "LATER", amount: 3, remaining_amount: 3 });
    expect((await api().claim("early", "LATER")).status).toBe(201);
  });

  it("answers SALE_ENDED, never SOLD_OUT, once a coupon that sold out has passed ends_at: from memory as from the database", async () => {
    const endsAt = Date.now() + 1500;
    await create({ name: "SOLD_THEN_ENDED", amount: 1, ends_at: new Date(endsAt).toISOString() });
    expect((await api().claim("holder", "SOLD_THEN_ENDED")).status).toBe(201);
    expectProblem(await rememberedAnswer(() => api().claim("late", "SOLD_THEN_ENDED")), 409, "SOLD_OUT");
    // Past the end by more than the margin (1 s) around it, within which the database decides.
    await Bun.sleep(Math.max(0, endsAt + 1000 + 200 - Date.now()));
    const keyed = await api().post(
      "/api/coupons/claim",
      { user_id: "later", coupon_name: "SOLD_THEN_ENDED" },
      { "idempotency-key": crypto.randomUUID() },
    );
    expectProblem(keyed, 409, "SALE_ENDED"); // the database's answer (a keyed claim is never from memory)
    expectProblem(await api().claim("later", "SOLD_THEN_ENDED"), 409, "SALE_ENDED");
    expectProblem(await api().claim("holder", "SOLD_THEN_ENDED"), 409, "ALREADY_CLAIMED");
  });

  it("ends the sale with ends_at in the past: SALE_ENDED; null reopens it", async () => {
    await api().createCoupon("OVER", 3);
    const ends_at = fromNow(-1_000);
    expect((await patch("OVER", { ends_at })).body).toEqual({ name: "OVER", amount: 3, remaining_amount: 3, ends_at });
    expectProblem(await api().claim("late", "OVER"), 409, "SALE_ENDED");
    expectProblem(await rememberedAnswer(() => api().claim("late", "OVER")), 409, "SALE_ENDED");
    expect((await patch("OVER", { ends_at: null })).body).toEqual({ name: "OVER", amount: 3, remaining_amount: 3 });
    expect((await api().claim("late", "OVER")).status).toBe(201);
  });

  it("keeps the bound it is not given, and refuses a change that would put ends_at before starts_at", async () => {
    const schedule = { starts_at: "2030-01-01T00:00:00.000Z", ends_at: "2030-02-01T00:00:00.000Z" };
    await create({ name: "MERGE", amount: 1, ...schedule });
    for (const change of [{ ends_at: "2029-12-31T00:00:00Z" }, { starts_at: "2030-02-01T00:00:00Z" }]) {
      const res = await patch("MERGE", change);
      expectProblem(res, 400, "VALIDATION_FAILED");
      expect(res.body.detail).toStartWith("ends_at: must be after starts_at");
    }
    expect(await read("MERGE")).toEqual({ name: "MERGE", amount: 1, remaining_amount: 1, ...schedule, claimed_by: [] });
    const later = await patch("MERGE", { ends_at: "2030-03-01T00:00:00+01:00" });
    expect(later.body).toEqual({
      name: "MERGE",
      amount: 1,
      remaining_amount: 1,
      starts_at: schedule.starts_at,
      ends_at: "2030-02-28T23:00:00.000Z",
    });
  });

  it.each([
    ["amount", { amount: 10 }, "amount: cannot be changed; a coupon's stock is fixed when it is created"],
    ["amount beside a valid change", { active: false, amount: 10 }, "amount: cannot be changed"],
    ["an unknown field", { activ: false }, "activ: unknown field (a PATCH may change starts_at, ends_at, active)"],
    ["an empty object", {}, "body: give at least one of starts_at, ends_at, active"],
    [
      "both bounds out of order",
      { starts_at: "2030-01-02T00:00:00Z", ends_at: "2030-01-01T00:00:00Z" },
      "ends_at: must be after starts_at",
    ],
    ["a date that does not exist", { starts_at: "2030-02-30T00:00:00Z" }, "starts_at: "],
    [
      "an instant without an offset",
      { ends_at: "2030-01-01T00:00:00" },
      "ends_at: must be an RFC 3339 date-time with an offset, e.g. 2026-11-27T09:00:00Z, or null",
    ],
    ["a string for active", { active: "false" }, "active: "],
    ["a JSON array", [{ active: false }], "body: "],
  ])("refuses %s with VALIDATION_FAILED naming the field (400), changing nothing", async (_label, json, detail) => {
    await api().createCoupon("UNCHANGED", 1);
    const res = await patch("UNCHANGED", json);
    expectProblem(res, 400, "VALIDATION_FAILED");
    expect(res.body.detail).toStartWith(detail);
    expect(await read("UNCHANGED")).toEqual({ name: "UNCHANGED", amount: 1, remaining_amount: 1, claimed_by: [] });
  });

  it("answers COUPON_NOT_FOUND (404) for an unknown coupon and creates nothing", async () => {
    const res = await patch("NO_SUCH_SALE", { active: false });
    expectProblem(res, 404, "COUPON_NOT_FOUND");
    expect(res.body.detail).toBe('No coupon named "NO_SUCH_SALE".');
    expect(await database.sql`select 1 from coupons where name = 'NO_SUCH_SALE'`).toHaveLength(0);
  });
});

describe("with an admin token", () => {
  const guarded = serveForSuite(() => database.handle.db, { adminToken: TOKEN });
  const routes = {
    create: {
      send: (headers?: Record<string, string>) => create({ name: "GUARDED", amount: 1 }, guarded.api, headers),
      ok: 201,
      doing: "Creating",
      done: async () => (await api().getCoupon("GUARDED")).status === 200,
    },
    patch: {
      send: (headers?: Record<string, string>) => patch("GUARDED_PATCH", { active: false }, guarded.api, headers),
      ok: 200,
      doing: "Changing",
      done: async () => (await read("GUARDED_PATCH")).active === false,
    },
  };
  beforeAll(async () => {
    await create({ name: "GUARDED_PATCH", amount: 1 }, guarded.api, { authorization: `Bearer ${TOKEN}` });
  });

  it.each(Object.keys(routes) as (keyof typeof routes)[])(
    "answers %s 401 without the token, 403 with a wrong one, and changes nothing until the right one",
    async (route) => {
      const { send, ok, doing, done } = routes[route];
      const missing = await send();
      expectProblem(missing, 401, "UNAUTHORIZED");
      expect(missing.body.detail).toBe(`${doing} coupons requires Authorization: Bearer <token>.`);
      expect(missing.headers.get("www-authenticate")).toBe('Bearer realm="coupon-service"');
      const wrong = await send({ authorization: `Bearer ${TOKEN}x` });
      expectProblem(wrong, 403, "FORBIDDEN");
      expect(wrong.body.detail).toBe(`The bearer token is not valid for ${doing.toLowerCase()} coupons.`);
      expect(await done()).toBe(false);
      expect((await send({ authorization: `Bearer ${TOKEN}` })).status).toBe(ok);
      expect(await done()).toBe(true);
    },
  );
});

describe("GET /api/coupons", () => {
  const names = [..."abcdefghijklmnopqrstuvwxyz"].map((c, i) => `LIST ${i % 2 ? c : c.toUpperCase()}`);
  names.push("list é", "list 日本", "list a&b=c", "list 100%", "list +plus");
  /** Every coupon name in the database's own order (its collation decides, not JavaScript's). */
  const inOrder = async () =>
    (await database.sql<{ name: string }[]>`select name from coupons order by name`).map((r) => r.name);
  const page = (query: string) => api().get(`/api/coupons${query}`);
  beforeAll(async () => {
    for (const name of names) await api().createCoupon(name, 1);
  });

  it.each([1, 7, 100])("walks every coupon exactly once, in name order, %i a page", async (limit) => {
    const walked: string[] = [];
    let after: string | null = null;
    for (let pages = 0; pages < 1_000; pages++) {
      const res = await page(`?limit=${limit}${after === null ? "" : `&after=${encodeURIComponent(after)}`}`);
      expect(res.status).toBe(200);
      expect(res.body.coupons.length).toBeLessThanOrEqual(limit);
      walked.push(...res.body.coupons.map((c: { name: string }) => c.name));
      after = res.body.next_after;
      if (after === null) break;
      expect(after).toBe(walked.at(-1) as string);
    }
    expect(after).toBeNull();
    expect(walked).toEqual(await inOrder());
  });

  it("ends on a full last page with next_after null, and answers an empty page after the last name", async () => {
    const all = await inOrder();
    const whole = await page(`?limit=${all.length}`);
    expect(whole.body.coupons).toHaveLength(all.length);
    expect(whole.body.next_after).toBeNull();
    const short = await page(`?limit=${all.length - 1}`);
    expect(short.body.next_after).toBe(all.at(-2) as string);
    expect((await page(`?after=${encodeURIComponent(all.at(-1) as string)}`)).body).toEqual({
      coupons: [],
      next_after: null,
    });
  });

  it("starts after a name that is no coupon at the next name in order", async () => {
    const [next] = await database.sql<
      { name: string }[]
    >`select name from coupons where name > 'LIST Bz' order by name limit 1`;
    const res = await page(`?limit=1&after=${encodeURIComponent("LIST Bz")}`);
    expect(res.body.coupons.map((c: { name: string }) => c.name)).toEqual([next?.name]);
  });

  it("answers 20 coupons by default, and 1 and 100 as limits", async () => {
    const all = await inOrder();
    expect(all.length).toBeGreaterThan(20);
    const first = await page("");
    expect(first.body.coupons.map((c: { name: string }) => c.name)).toEqual(all.slice(0, 20));
    expect(first.body.next_after).toBe(all[19] as string);
    expect((await page("?limit=1")).body.coupons).toHaveLength(1);
    expect((await page("?limit=100")).body.coupons).toHaveLength(Math.min(100, all.length));
  });

  it.each(["0", "101", "abc", "5.5", "-1", ""])("refuses limit=%p with VALIDATION_FAILED (400)", async (limit) => {
    const res = await page(`?limit=${limit}`);
    expectProblem(res, 400, "VALIDATION_FAILED");
    expect(res.body.detail).toBe("limit: must be an integer from 1 to 100");
  });

  it("answers each coupon without claimed_by, with the sale keys only where they are used", async () => {
    await create({
      name: "LIST SCHEDULED",
      amount: 1,
      starts_at: "2031-01-01T00:00:00Z",
      ends_at: "2031-01-02T00:00:00+00:00",
    });
    await api().createCoupon("LIST PAUSED", 1);
    await patch("LIST PAUSED", { active: false });
    const items = new Map<string, object>();
    for (let after: string | null = ""; after !== null; ) {
      const res: ApiResponse = await page(`?limit=100${after ? `&after=${encodeURIComponent(after)}` : ""}`);
      for (const item of res.body.coupons) items.set(item.name, item);
      after = res.body.next_after;
    }
    expect(items.get("LIST A")).toEqual({ name: "LIST A", amount: 1, remaining_amount: 1 });
    expect(items.get("LIST SCHEDULED")).toEqual({
      name: "LIST SCHEDULED",
      amount: 1,
      remaining_amount: 1,
      starts_at: "2031-01-01T00:00:00.000Z",
      ends_at: "2031-01-02T00:00:00.000Z",
    });
    expect(items.get("LIST PAUSED")).toEqual({ name: "LIST PAUSED", amount: 1, remaining_amount: 1, active: false });
    expect([...items.values()].filter((item) => "claimed_by" in item)).toEqual([]);
  });
});

describe("claims in SQL", () => {
  it("win only from starts_at and before ends_at, by the database's clock, with nothing won outside", async () => {
    const opens = Date.now() + 2_500;
    const closes = opens + 2_000;
    const schedule = { starts_at: new Date(opens).toISOString(), ends_at: new Date(closes).toISOString() };
    expect((await create({ name: "WINDOW", amount: 100_000, ...schedule })).status).toBe(201);
    // Four clients claim as new users, one after another each, until the sale has ended (or 30 s).
    const worker = async (w: number) => {
      const seen: string[] = [];
      for (let i = 0; Date.now() < closes + 30_000; i++) {
        const res = await api().claim(`window-${w}-${i}`, "WINDOW");
        const outcome = res.status === 201 ? "created" : res.body.code;
        if (res.status === 201) {
          const at = Date.parse(res.body.claimed_at);
          expect(at >= opens - 1_000 && at < closes + 1_000).toBe(true);
        }
        if (seen.at(-1) !== outcome) seen.push(outcome);
        if (outcome === "SALE_ENDED") break;
      }
      return seen;
    };
    const phases = await Promise.all([0, 1, 2, 3].map(worker));
    for (const seen of phases) expect(seen).toEqual(["SALE_NOT_STARTED", "created", "SALE_ENDED"]);
    const outside = await database.sql`select c.coupon_name, c.user_id, c.created_at from claims c
        join coupons k on k.name = c.coupon_name
        where (k.starts_at is not null and c.created_at < k.starts_at)
           or (k.ends_at is not null and c.created_at >= k.ends_at)`;
    expect([...outside]).toEqual([]);
    const [won] = await database.sql<
      { n: number }[]
    >`select count(*)::int as n from claims where coupon_name = 'WINDOW'`;
    expect(won?.n).toBeGreaterThan(0);
    expect((await read("WINDOW")).remaining_amount).toBe(100_000 - (won?.n ?? 0));
    await expectStockInvariant(database.sql, "WINDOW");
  }, 60_000);
});
