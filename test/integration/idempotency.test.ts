// Idempotency-Key on create, claim and release over real HTTP against PostgreSQL: the replay of each
// (same status, body, Location and Content-Type, Idempotent-Replayed only on the replay, nothing
// applied twice), from another instance and after a restart; the same key for another request (422);
// which answers are stored and which are not (the retry executes); one key at once in one process;
// keyed claims never answered from memory; expiry; the key's syntax; requests without the header.
import { describe, expect, it } from "bun:test";
import { loadConfig } from "../../src/config";
import type { ClaimResult } from "../../src/domain/claim";
import { decideClaims } from "../../src/store/claims";
import { openPostgres } from "../../src/store/client";
import { buildApp, listen, serveForSuite, type TestAppOptions } from "../support/app";
import { databaseForSuite } from "../support/database";
import { type ApiResponse, type Client, client } from "../support/http";
import { expectStockInvariant } from "../support/invariant";
import { until } from "../support/replicas";

const TOKEN = "s3cret-token-0123456789";
const KEY_RULE =
  "Idempotency-Key: must be 1..255 printable ASCII characters (a quoted string counts without its quotes)";
const REUSED = {
  type: "https://coupon-service.dev/problems/idempotency-key-reused",
  title: "Idempotency key reused",
  status: 422,
  detail: "This Idempotency-Key was used for a different request; use a new key for a new request.",
  code: "IDEMPOTENCY_KEY_REUSED",
};
const IN_USE = {
  type: "https://coupon-service.dev/problems/idempotency-key-in-use",
  title: "Idempotency key in use",
  status: 409,
  detail: "A request with this Idempotency-Key is still in progress; retry shortly to get its answer.",
  code: "IDEMPOTENCY_KEY_IN_USE",
};

const database = databaseForSuite();

const served = serveForSuite(() => database.handle.db);
const api = () => served.api;

const newKey = () => crypto.randomUUID();
const keyed = (key?: string, headers: Record<string, string> = {}) =>
  key === undefined ? headers : { ...headers, "idempotency-key": key };

const create = (on: Client, body: Record<string, unknown>, key?: string, headers?: Record<string, string>) =>
  on.post("/api/coupons", body, keyed(key, headers));
const claim = (on: Client, user: string, coupon: string, key?: string) =>
  on.post("/api/coupons/claim", { user_id: user, coupon_name: coupon }, keyed(key));
const releasePath = (coupon: string, user: string) =>
  `/api/coupons/${encodeURIComponent(coupon)}/claims/${encodeURIComponent(user)}`;
const release = (on: Client, coupon: string, user: string, key?: string, headers?: Record<string, string>) =>
  on.call("DELETE", releasePath(coupon, user), { headers: keyed(key, headers) });
const patch = (on: Client, name: string, json: unknown) =>
  on.call("PATCH", `/api/coupons/${encodeURIComponent(name)}`, { json });

/** A coupon of `amount` (and `extra` fields) created without a key, then claimed by `users` in order. */
async function couponClaimedBy(name: string, amount: number, users: string[], extra: Record<string, unknown> = {}) {
  expect((await create(api(), { name, amount, ...extra })).status).toBe(201);
  for (const user of users) expect((await claim(api(), user, name)).status).toBe(201);
}

const holders = async (coupon: string) =>
  (await database.sql<{ user_id: string }[]>`select user_id from claims where coupon_name = ${coupon} order by id`).map(
    (row) => row.user_id,
  );
const releaseCount = async (coupon: string) =>
  (await database.sql<{ n: number }[]>`select count(*)::int as n from claim_releases where coupon_name = ${coupon}`)[0]
    ?.n;
const remaining = async (coupon: string) =>
  (await database.sql<{ remaining_amount: number }[]>`select remaining_amount from coupons where name = ${coupon}`)[0]
    ?.remaining_amount;
const couponCount = async (name: string) =>
  (await database.sql<{ n: number }[]>`select count(*)::int as n from coupons where name = ${name}`)[0]?.n;
/** What idempotency_keys holds under `key`, or undefined. */
const stored = async (key: string) =>
  (await database.sql<{ outcome: string | null }[]>`select outcome from idempotency_keys where key = ${key}`)[0];
const keyCount = async () =>
  (await database.sql<{ n: number }[]>`select count(*)::int as n from idempotency_keys`)[0]?.n ?? 0;

/**
 * `again` is `first` given again: same status, Content-Type, Location and body (a problem's request_id
 * is the new request's own, as its X-Request-Id says), and Idempotent-Replayed: true only on `again`.
 */
function expectReplay(first: ApiResponse, again: ApiResponse): void {
  expect(first.headers.get("idempotent-replayed")).toBeNull();
  expect(again.headers.get("idempotent-replayed")).toBe("true");
  expect(again.status).toBe(first.status);
  // Every header the first answer had, and no other: Retry-After, Location, Content-Type, Content-Length.
  expect(answerHeaders(again)).toEqual(answerHeaders(first));
  if (first.headers.get("content-type") === "application/problem+json") {
    const { request_id: firstId, ...firstProblem } = first.body;
    const { request_id: againId, ...againProblem } = again.body;
    expect(JSON.stringify(againProblem)).toBe(JSON.stringify(firstProblem));
    expect(againId).toBe(again.headers.get("x-request-id"));
    expect(againId).not.toBe(firstId);
  } else {
    expect(again.headers.get("content-length")).toBe(first.headers.get("content-length") as string);
    expect(JSON.stringify(again.body)).toBe(JSON.stringify(first.body));
  }
}

/** The headers of an answer but those that belong to the request or the moment (and the replay marker). */
function answerHeaders(res: ApiResponse): Record<string, string> {
  const own = new Set(["x-request-id", "idempotent-replayed", "date"]);
  return Object.fromEntries([...res.headers.entries()].filter(([name]) => !own.has(name)));
}

/** A problem answer with `status` and `code`, not marked as replayed. */
function expectFresh(res: ApiResponse, status: number, code?: string): void {
  expect({ status: res.status, code: res.body?.code }).toEqual({ status, code });
  expect(res.headers.get("idempotent-replayed")).toBeNull();
}

/** `res` is exactly the problem `problem` at `instance`, with its own request id. */
function expectProblemBody(res: ApiResponse, problem: Record<string, unknown>, instance: string): void {
  expect(res.status).toBe(problem.status as number);
  expect(res.headers.get("content-type")).toBe("application/problem+json");
  const requestId = res.headers.get("x-request-id");
  expect(JSON.stringify(res.body)).toBe(JSON.stringify({ ...problem, instance, request_id: requestId }));
}

/** Serves another app on `db` (default: the suite's pool) for the length of `run`. */
async function withApp<T>(
  options: TestAppOptions,
  run: (on: Client, built: ReturnType<typeof buildApp>) => Promise<T>,
  db = database.handle.db,
): Promise<T> {
  const built = buildApp(db, options);
  const server = listen(built.app);
  try {
    return await run(client(server.baseUrl), built);
  } finally {
    await server.stop();
  }
}

/** Backends of the test database waiting for a lock. */
const lockWaits = async () =>
  (
    await database.sql<{ n: number }[]>`select count(*)::int as n from pg_stat_activity
      where datname = current_database() and wait_event_type = 'Lock'`
  )[0]?.n ?? 0;

/** A pool of its own on the test database, as another replica (or a restarted process) has. */
const ownPool = () => openPostgres(database.url, loadConfig({ DATABASE_URL: database.url, DATABASE_POOL_MAX: "3" }));

describe("a request again with the same Idempotency-Key", () => {
  it("gets a create's 201 again: the same coupon, Location and Content-Type, one coupon stored", async () => {
    const key = newKey();
    const body = { name: "REPLAY_CREATE", amount: 3, starts_at: "2020-01-01T00:00:00+01:00" };
    const first = await create(api(), body, key);
    expect(first.status).toBe(201);
    expect(first.headers.get("location")).toBe("/api/coupons/REPLAY_CREATE");
    expect(first.body).toEqual({
      name: "REPLAY_CREATE",
      amount: 3,
      remaining_amount: 3,
      starts_at: "2019-12-31T23:00:00.000Z",
    });
    const again = await create(api(), body, key);
    expectReplay(first, again);
    expect(await couponCount("REPLAY_CREATE")).toBe(1);
    expect(await stored(key)).toEqual({ outcome: "created" });
  });

  it("gets a claim's 201 again with the same claimed_at, the unit taken once", async () => {
    await couponClaimedBy("REPLAY_CLAIM", 3, []);
    const key = newKey();
    const first = await claim(api(), "ann", "REPLAY_CLAIM", key);
    expect(first.status).toBe(201);
    const again = await claim(api(), "ann", "REPLAY_CLAIM", key);
    expectReplay(first, again);
    expect(again.body).toEqual({
      user_id: "ann",
      coupon_name: "REPLAY_CLAIM",
      claimed_at: first.body.claimed_at,
      seq: 1,
    });
    const [row] = await database.sql<{ created_at: Date }[]>`select created_at from claims
      where coupon_name = 'REPLAY_CLAIM' and user_id = 'ann'`;
    expect(row?.created_at.toISOString()).toBe(first.body.claimed_at);
    expect(await holders("REPLAY_CLAIM")).toEqual(["ann"]);
    expect(await remaining("REPLAY_CLAIM")).toBe(2);
  });

  it("gets a release's 200 again with the same released_at and remaining_amount, released once", async () => {
    await couponClaimedBy("REPLAY_RELEASE", 2, ["ann", "bob"]);
    const key = newKey();
    const first = await release(api(), "REPLAY_RELEASE", "ann", key);
    expect(first.status).toBe(200);
    expect(first.body.remaining_amount).toBe(1);
    expect((await claim(api(), "cid", "REPLAY_RELEASE")).status).toBe(201); // the stock moves on
    const again = await release(api(), "REPLAY_RELEASE", "ann", key);
    expectReplay(first, again);
    expect(again.body).toMatchObject({ remaining_amount: 1, released_at: first.body.released_at });
    expect(await releaseCount("REPLAY_RELEASE")).toBe(1);
    expect(await holders("REPLAY_RELEASE")).toEqual(["bob", "cid"]);
    expect(await remaining("REPLAY_RELEASE")).toBe(0);
  });

  it("gets a claim's original 201 and claimed_at after that claim was released, claiming nothing", async () => {
    await couponClaimedBy("REPLAY_RELEASED", 2, []);
    const key = newKey();
    const first = await claim(api(), "ann", "REPLAY_RELEASED", key);
    expect(first.status).toBe(201);
    expect((await release(api(), "REPLAY_RELEASED", "ann")).status).toBe(200);
    const again = await claim(api(), "ann", "REPLAY_RELEASED", key);
    expectReplay(first, again);
    expect(again.body.claimed_at).toBe(first.body.claimed_at);
    expect(await holders("REPLAY_RELEASED")).toEqual([]);
    expect(await remaining("REPLAY_RELEASED")).toBe(2);
  });

  it("gets a create's coupon as it was created after claims took stock and a PATCH paused and rescheduled it", async () => {
    const key = newKey();
    const first = await create(api(), { name: "REPLAY_PATCHED", amount: 2 }, key);
    expect(first.body).toEqual({ name: "REPLAY_PATCHED", amount: 2, remaining_amount: 2 });
    expect((await claim(api(), "ann", "REPLAY_PATCHED")).status).toBe(201);
    const changed = await patch(api(), "REPLAY_PATCHED", { active: false, starts_at: "2999-01-01T00:00:00Z" });
    expect(changed.body).toMatchObject({ remaining_amount: 1, active: false, starts_at: "2999-01-01T00:00:00.000Z" });
    const again = await create(api(), { name: "REPLAY_PATCHED", amount: 2 }, key);
    expectReplay(first, again);
    expect(again.body).toEqual({ name: "REPLAY_PATCHED", amount: 2, remaining_amount: 2 });
  });

  it("is answered by a second instance with its own pool on the same database", async () => {
    await couponClaimedBy("REPLAY_ELSEWHERE", 3, ["bob"]);
    const keys = { create: newKey(), claim: newKey(), release: newKey() };
    const firsts = [
      await create(api(), { name: "REPLAY_ELSEWHERE_NEW", amount: 1 }, keys.create),
      await claim(api(), "ann", "REPLAY_ELSEWHERE", keys.claim),
      await release(api(), "REPLAY_ELSEWHERE", "bob", keys.release),
    ];
    expect(firsts.map((res) => res.status)).toEqual([201, 201, 200]);
    const pool = ownPool();
    try {
      await withApp(
        {},
        async (second) => {
          const agains = [
            await create(second, { name: "REPLAY_ELSEWHERE_NEW", amount: 1 }, keys.create),
            await claim(second, "ann", "REPLAY_ELSEWHERE", keys.claim),
            await release(second, "REPLAY_ELSEWHERE", "bob", keys.release),
          ];
          for (const [i, again] of agains.entries()) expectReplay(firsts[i] as ApiResponse, again);
        },
        pool.db,
      );
    } finally {
      await pool.close();
    }
    expect(await couponCount("REPLAY_ELSEWHERE_NEW")).toBe(1);
    expect(await holders("REPLAY_ELSEWHERE")).toEqual(["ann"]);
    expect(await releaseCount("REPLAY_ELSEWHERE")).toBe(1);
    expect(await remaining("REPLAY_ELSEWHERE")).toBe(2);
  });

  it("is answered after a restart: the first app and its pool stopped, a new one built", async () => {
    const keys = { create: newKey(), claim: newKey(), release: newKey() };
    const before = ownPool();
    const firsts = await withApp(
      {},
      async (on) => [
        await create(on, { name: "REPLAY_RESTART", amount: 2 }, keys.create),
        await claim(on, "ann", "REPLAY_RESTART", keys.claim),
        await release(on, "REPLAY_RESTART", "ann", keys.release),
      ],
      before.db,
    );
    await before.close();
    expect(firsts.map((res) => res.status)).toEqual([201, 201, 200]);
    const after = ownPool();
    try {
      await withApp(
        {},
        async (on) => {
          expectReplay(firsts[0] as ApiResponse, await create(on, { name: "REPLAY_RESTART", amount: 2 }, keys.create));
          expectReplay(firsts[1] as ApiResponse, await claim(on, "ann", "REPLAY_RESTART", keys.claim));
          expectReplay(firsts[2] as ApiResponse, await release(on, "REPLAY_RESTART", "ann", keys.release));
        },
        after.db,
      );
    } finally {
      await after.close();
    }
    expect(await holders("REPLAY_RESTART")).toEqual([]);
    expect(await releaseCount("REPLAY_RESTART")).toBe(1);
    expect(await remaining("REPLAY_RESTART")).toBe(2);
  });
});

describe("the same Idempotency-Key for another request", () => {
  it("refuses a claim with another body with IDEMPOTENCY_KEY_REUSED (422), claiming nothing", async () => {
    await couponClaimedBy("REUSE_CLAIM", 3, []);
    const other = "REUSE_CLAIM_OTHER";
    await couponClaimedBy(other, 3, []);
    const key = newKey();
    expect((await claim(api(), "ann", "REUSE_CLAIM", key)).status).toBe(201);
    for (const [user, coupon] of [
      ["bob", "REUSE_CLAIM"],
      ["ann", other],
    ] as const) {
      const res = await claim(api(), user, coupon, key);
      expectProblemBody(res, REUSED, "/api/coupons/claim");
      expect(res.headers.get("idempotent-replayed")).toBeNull();
    }
    expect(await holders("REUSE_CLAIM")).toEqual(["ann"]);
    expect(await holders(other)).toEqual([]);
    expect([await remaining("REUSE_CLAIM"), await remaining(other)]).toEqual([2, 3]);
  });

  it("refuses a create with another name, amount or schedule with IDEMPOTENCY_KEY_REUSED (422), creating nothing", async () => {
    const key = newKey();
    expect((await create(api(), { name: "REUSE_CREATE", amount: 1 }, key)).status).toBe(201);
    for (const body of [
      { name: "REUSE_CREATE_OTHER", amount: 1 },
      { name: "REUSE_CREATE", amount: 2 },
      { name: "REUSE_CREATE", amount: 1, ends_at: "2999-01-01T00:00:00Z" },
    ]) {
      expectProblemBody(await create(api(), body, key), REUSED, "/api/coupons");
    }
    expect(await couponCount("REUSE_CREATE_OTHER")).toBe(0);
    expect((await api().getCoupon("REUSE_CREATE")).body).toEqual({
      name: "REUSE_CREATE",
      amount: 1,
      remaining_amount: 1,
      claimed_by: [],
    });
  });

  it("refuses a release of another user's claim with IDEMPOTENCY_KEY_REUSED (422), releasing nothing", async () => {
    await couponClaimedBy("REUSE_RELEASE", 3, ["ann", "bob"]);
    const key = newKey();
    expect((await release(api(), "REUSE_RELEASE", "ann", key)).status).toBe(200);
    const res = await release(api(), "REUSE_RELEASE", "bob", key);
    expectProblemBody(res, REUSED, "/api/coupons/REUSE_RELEASE/claims/bob");
    expect(await holders("REUSE_RELEASE")).toEqual(["bob"]);
    expect(await releaseCount("REUSE_RELEASE")).toBe(1);
  });

  it("refuses the key on another route with IDEMPOTENCY_KEY_REUSED (422): keys are one namespace, nothing applied", async () => {
    await couponClaimedBy("REUSE_ROUTE", 3, ["bob"]);
    const key = newKey();
    expect((await claim(api(), "ann", "REUSE_ROUTE", key)).status).toBe(201);
    expectProblemBody(await create(api(), { name: "REUSE_ROUTE_NEW", amount: 1 }, key), REUSED, "/api/coupons");
    expectProblemBody(await release(api(), "REUSE_ROUTE", "bob", key), REUSED, "/api/coupons/REUSE_ROUTE/claims/bob");
    expectProblemBody(
      await release(api(), "REUSE_ROUTE", "ann", key), // even the release of the claim the key made
      REUSED,
      "/api/coupons/REUSE_ROUTE/claims/ann",
    );
    expect(await couponCount("REUSE_ROUTE_NEW")).toBe(0);
    expect(await holders("REUSE_ROUTE")).toEqual(["bob", "ann"]);
    expect(await releaseCount("REUSE_ROUTE")).toBe(0);
    expect(await stored(key)).toEqual({ outcome: "created" });
  });
});

describe("answers that invite a retry: not stored, the retry with the same key executes", () => {
  it("a 503 from a failed batch: the retry is claimed (201, not replayed), once", async () => {
    await couponClaimedBy("RETRY_503", 2, []);
    let fail = true;
    const decide: typeof decideClaims = async (...args) => {
      if (fail) {
        fail = false;
        throw new Error("the first batch fails");
      }
      return decideClaims(...args);
    };
    await withApp({ decide }, async (on) => {
      const key = newKey();
      const failed = await claim(on, "ann", "RETRY_503", key);
      expectFresh(failed, 503, "SERVICE_UNAVAILABLE");
      expect(failed.headers.get("retry-after")).toBe("1");
      expect(await stored(key)).toBeUndefined();
      const retry = await claim(on, "ann", "RETRY_503", key);
      expect(retry.status).toBe(201);
      expect(retry.headers.get("idempotent-replayed")).toBeNull();
      expectReplay(retry, await claim(on, "ann", "RETRY_503", key));
    });
    expect(await holders("RETRY_503")).toEqual(["ann"]);
    expect(await remaining("RETRY_503")).toBe(1);
  });

  it("a 503 at the deadline of a batch that is still stalled: the retry waits for that batch, and is given its answer", async () => {
    await couponClaimedBy("RETRY_STALLED", 2, []);
    let stalled = 0;
    let resume = () => {};
    const gate = new Promise<void>((resolve) => {
      resume = resolve;
    });
    let reportLate: (batch: ClaimResult[]) => void = () => {};
    const late = new Promise<ClaimResult[]>((resolve) => {
      reportLate = resolve;
    });
    const decide: typeof decideClaims = async (...args) => {
      if (stalled++ > 0) return decideClaims(...args);
      await gate;
      const decided = await decideClaims(...args);
      reportLate(decided);
      return decided;
    };
    try {
      await withApp({ decide, timeoutMs: 1000 }, async (on) => {
        const key = newKey();
        expectFresh(await claim(on, "ann", "RETRY_STALLED", key), 503, "SERVICE_UNAVAILABLE");
        expect(stalled).toBe(1);
        // The first batch may still reach the database: the coupon's next one is not sent before it.
        const retrying = claim(on, "ann", "RETRY_STALLED", key);
        await Bun.sleep(200);
        expect(stalled).toBe(1);
        resume(); // the first batch now reaches the database and claims, storing its answer under the key
        const [first] = await late;
        if (first?.outcome !== "created") throw new Error(`the stalled batch answered ${first?.outcome}`);
        expect(first.remaining).toBe(1);
        const retry = await retrying;
        expect(retry.status).toBe(201);
        expect(retry.headers.get("idempotent-replayed")).toBe("true");
        expect(retry.body.claimed_at).toBe(first.decidedAt.toISOString());
        const again = await claim(on, "ann", "RETRY_STALLED", key);
        expect([again.status, again.headers.get("idempotent-replayed"), again.body]).toEqual([201, "true", retry.body]);
      });
    } finally {
      resume();
    }
    expect(await holders("RETRY_STALLED")).toEqual(["ann"]);
    expect(await remaining("RETRY_STALLED")).toBe(1);
  });

  it("SALE_PAUSED: after the resume the same key claims (201, not replayed)", async () => {
    await couponClaimedBy("RETRY_PAUSED", 2, []);
    expect((await patch(api(), "RETRY_PAUSED", { active: false })).status).toBe(200);
    const key = newKey();
    expectFresh(await claim(api(), "ann", "RETRY_PAUSED", key), 409, "SALE_PAUSED");
    expect(await stored(key)).toBeUndefined();
    expect((await patch(api(), "RETRY_PAUSED", { active: true })).status).toBe(200);
    const retry = await claim(api(), "ann", "RETRY_PAUSED", key);
    expect(retry.status).toBe(201);
    expect(retry.headers.get("idempotent-replayed")).toBeNull();
    expect(await holders("RETRY_PAUSED")).toEqual(["ann"]);
    expect(await stored(key)).toEqual({ outcome: "created" });
  });

  it("SALE_NOT_STARTED: once the sale is open the same key claims (201, not replayed)", async () => {
    await couponClaimedBy("RETRY_NOT_STARTED", 2, [], { starts_at: "2999-01-01T00:00:00Z" });
    const key = newKey();
    const early = await claim(api(), "ann", "RETRY_NOT_STARTED", key);
    expectFresh(early, 409, "SALE_NOT_STARTED");
    expect(Number(early.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(await stored(key)).toBeUndefined();
    expect((await patch(api(), "RETRY_NOT_STARTED", { starts_at: null })).status).toBe(200);
    const retry = await claim(api(), "ann", "RETRY_NOT_STARTED", key);
    expect(retry.status).toBe(201);
    expect(retry.headers.get("idempotent-replayed")).toBeNull();
    expect(await holders("RETRY_NOT_STARTED")).toEqual(["ann"]);
  });
});

describe("refusals that are stored: the same key gets them again, whatever changed since", () => {
  it("SOLD_OUT stays the answer after a release gives stock back, and nothing is claimed", async () => {
    await couponClaimedBy("STORED_SOLD_OUT", 1, ["ann"]);
    const key = newKey();
    const first = await claim(api(), "bob", "STORED_SOLD_OUT", key);
    expectFresh(first, 409, "SOLD_OUT");
    expect((await release(api(), "STORED_SOLD_OUT", "ann")).status).toBe(200);
    expectReplay(first, await claim(api(), "bob", "STORED_SOLD_OUT", key));
    expect(await holders("STORED_SOLD_OUT")).toEqual([]);
    expect(await remaining("STORED_SOLD_OUT")).toBe(1);
    expect((await claim(api(), "bob", "STORED_SOLD_OUT", newKey())).status).toBe(201); // a new key is a new attempt
  });

  it("ALREADY_CLAIMED stays the answer after that claim was released", async () => {
    await couponClaimedBy("STORED_ALREADY", 2, ["ann"]);
    const key = newKey();
    const first = await claim(api(), "ann", "STORED_ALREADY", key);
    expectFresh(first, 409, "ALREADY_CLAIMED");
    expect((await release(api(), "STORED_ALREADY", "ann")).status).toBe(200);
    expectReplay(first, await claim(api(), "ann", "STORED_ALREADY", key));
    expect(await holders("STORED_ALREADY")).toEqual([]);
  });

  it("ALREADY_CLAIMED to a holder of a sale rescheduled into the future: no Retry-After, first or replayed", async () => {
    await couponClaimedBy("STORED_ALREADY_LATER", 2, ["ann"]);
    const later = new Date(Date.now() + 3_600_000).toISOString();
    expect((await patch(api(), "STORED_ALREADY_LATER", { starts_at: later })).status).toBe(200);
    const unkeyed = await claim(api(), "ann", "STORED_ALREADY_LATER");
    expectFresh(unkeyed, 409, "ALREADY_CLAIMED");
    expect(unkeyed.headers.get("retry-after")).toBeNull(); // retrying cannot change it
    const key = newKey();
    const first = await claim(api(), "ann", "STORED_ALREADY_LATER", key);
    expectFresh(first, 409, "ALREADY_CLAIMED");
    expect(first.headers.get("retry-after")).toBeNull();
    expectReplay(first, await claim(api(), "ann", "STORED_ALREADY_LATER", key));
    // A non-holder is told when to come back.
    expect((await claim(api(), "bob", "STORED_ALREADY_LATER")).headers.get("retry-after")).toMatch(/^\d+$/);
  });

  it("SALE_ENDED stays the answer after the end was cleared", async () => {
    const past = { starts_at: "2020-01-01T00:00:00Z", ends_at: "2020-01-02T00:00:00Z" };
    await couponClaimedBy("STORED_ENDED", 2, [], past);
    const key = newKey();
    const first = await claim(api(), "ann", "STORED_ENDED", key);
    expectFresh(first, 409, "SALE_ENDED");
    expect((await patch(api(), "STORED_ENDED", { ends_at: null })).status).toBe(200);
    expectReplay(first, await claim(api(), "ann", "STORED_ENDED", key));
    expect(await holders("STORED_ENDED")).toEqual([]);
  });

  it("COUPON_NOT_FOUND stays the answer to a claim and a release after the coupon was created", async () => {
    const claimKey = newKey();
    const releaseKey = newKey();
    const firstClaim = await claim(api(), "ann", "STORED_NOT_FOUND", claimKey);
    expectFresh(firstClaim, 404, "COUPON_NOT_FOUND");
    const firstRelease = await release(api(), "STORED_NOT_FOUND", "bob", releaseKey);
    expectFresh(firstRelease, 404, "COUPON_NOT_FOUND");
    await couponClaimedBy("STORED_NOT_FOUND", 2, ["bob"]);
    expectReplay(firstClaim, await claim(api(), "ann", "STORED_NOT_FOUND", claimKey));
    expectReplay(firstRelease, await release(api(), "STORED_NOT_FOUND", "bob", releaseKey));
    expect(await holders("STORED_NOT_FOUND")).toEqual(["bob"]);
  });

  it("CLAIM_NOT_FOUND stays the answer to a release after the user claimed", async () => {
    await couponClaimedBy("STORED_NO_CLAIM", 2, []);
    const key = newKey();
    const first = await release(api(), "STORED_NO_CLAIM", "ann", key);
    expectFresh(first, 404, "CLAIM_NOT_FOUND");
    expect((await claim(api(), "ann", "STORED_NO_CLAIM")).status).toBe(201);
    expectReplay(first, await release(api(), "STORED_NO_CLAIM", "ann", key));
    expect(await holders("STORED_NO_CLAIM")).toEqual(["ann"]);
    expect(await releaseCount("STORED_NO_CLAIM")).toBe(0);
  });

  it("COUPON_EXISTS of a create is stored and given again", async () => {
    await couponClaimedBy("STORED_EXISTS", 1, []);
    const key = newKey();
    const first = await create(api(), { name: "STORED_EXISTS", amount: 1 }, key);
    expectFresh(first, 409, "COUPON_EXISTS");
    expect(await stored(key)).toEqual({ outcome: "exists" });
    expectReplay(first, await create(api(), { name: "STORED_EXISTS", amount: 1 }, key));
  });
});

describe("requests with one key at once, in one process", () => {
  it("claims once for 10 concurrent claims with one key: all 201 with one claimed_at, one not replayed", async () => {
    await couponClaimedBy("CONCURRENT_KEY", 5, []);
    const key = newKey();
    const answers = await Promise.all(Array.from({ length: 10 }, () => claim(api(), "ann", "CONCURRENT_KEY", key)));
    expect(answers.map((res) => res.status)).toEqual(Array(10).fill(201));
    expect(new Set(answers.map((res) => res.body.claimed_at)).size).toBe(1);
    expect(answers.filter((res) => res.headers.get("idempotent-replayed") === null)).toHaveLength(1);
    expect(answers.filter((res) => res.headers.get("idempotent-replayed") === "true")).toHaveLength(9);
    expect(await holders("CONCURRENT_KEY")).toEqual(["ann"]);
    expect(await remaining("CONCURRENT_KEY")).toBe(4);
    await expectStockInvariant(database.sql, "CONCURRENT_KEY");
  });

  // A request with a key waits for the one before it in this process. When that one gets no answer by
  // its deadline (503 unconfirmed: its transaction may still be running), the ones waiting on it are
  // told IDEMPOTENCY_KEY_IN_USE rather than piled onto the same stuck work; a retry once it committed
  // gets its answer.
  it("answers IDEMPOTENCY_KEY_IN_USE (409, Retry-After: 1) to the requests waiting on a keyed request left unconfirmed, storing nothing for them", async () => {
    await couponClaimedBy("IN_USE", 2, ["bob"]);
    const key = newKey();
    const holder = await database.sql.reserve();
    try {
      // The key's row held by an open transaction: the first claim's batch waits for it in the database.
      await holder`begin`;
      await holder`insert into idempotency_keys (key, fingerprint, created_at, expires_at)
        values (${key}, 'held by the test', now(), now() + interval '1 hour')`;
      await withApp({ timeoutMs: 1000 }, async (on) => {
        const first = claim(on, "ann", "IN_USE", key);
        await until(async () => (await lockWaits()) >= 1, "the first claim's batch waiting for the key's row");
        const waiting = await Promise.all([
          create(on, { name: "IN_USE_NEW", amount: 1 }, key),
          claim(on, "ann", "IN_USE", key),
          release(on, "IN_USE", "bob", key),
        ]);
        expectFresh(await first, 503, "SERVICE_UNAVAILABLE");
        const instances = ["/api/coupons", "/api/coupons/claim", "/api/coupons/IN_USE/claims/bob"];
        for (const [i, res] of waiting.entries()) {
          expectProblemBody(res, IN_USE, instances[i] as string);
          expect(res.headers.get("retry-after")).toBe("1");
          expect(res.headers.get("idempotent-replayed")).toBeNull();
        }
        // The row freed, the first claim's batch finds the key free and commits its claim with it.
        await holder`rollback`;
        await until(async () => (await stored(key))?.outcome === "created", "the first claim committed with its key");
        const retry = await claim(on, "ann", "IN_USE", key);
        expect({ status: retry.status, replayed: retry.headers.get("idempotent-replayed") }).toEqual({
          status: 201,
          replayed: "true",
        });
      });
    } finally {
      await holder`rollback`.catch(() => {});
      holder.release();
    }
    expect(await couponCount("IN_USE_NEW")).toBe(0);
    expect(await holders("IN_USE")).toEqual(["bob", "ann"]);
    expect(await releaseCount("IN_USE")).toBe(0);
  });
});

describe("keyed claims and memory", () => {
  it("decides keyed claims on a sold-out coupon in the database (SOLD_OUT, stored), never from memory", async () => {
    await withApp({}, async (on, { claimer }) => {
      expect((await create(on, { name: "KEYED_MEMORY", amount: 1 })).status).toBe(201);
      expect((await claim(on, "ann", "KEYED_MEMORY")).status).toBe(201);
      // Unkeyed claims until the instance answers the coupon from memory.
      await until(async () => {
        const before = claimer.stats.fromMemory;
        expectFresh(await claim(on, "zed", "KEYED_MEMORY"), 409, "SOLD_OUT");
        return claimer.stats.fromMemory > before;
      }, "a SOLD_OUT answered from memory");
      const fromMemory = claimer.stats.fromMemory;
      const keys = [newKey(), newKey()];
      const firsts = [await claim(on, "bob", "KEYED_MEMORY", keys[0]), await claim(on, "cid", "KEYED_MEMORY", keys[1])];
      for (const res of firsts) expectFresh(res, 409, "SOLD_OUT");
      expect(claimer.stats.fromMemory).toBe(fromMemory);
      for (const key of keys) expect(await stored(key)).toEqual({ outcome: "sold_out" });
      expectReplay(firsts[0] as ApiResponse, await claim(on, "bob", "KEYED_MEMORY", keys[0]));
      expect(claimer.stats.fromMemory).toBe(fromMemory);
      expectFresh(await claim(on, "zed", "KEYED_MEMORY"), 409, "SOLD_OUT");
      expect(claimer.stats.fromMemory).toBe(fromMemory + 1); // memory still answers the unkeyed
    });
  });
});

describe("a key's lifetime (IDEMPOTENCY_TTL)", () => {
  it("keeps a key for the TTL; once it expires the same key with another request executes", async () => {
    await withApp({ idempotencyTtlMs: 200 }, async (on) => {
      expect((await create(on, { name: "TTL", amount: 3 })).status).toBe(201);
      const key = newKey();
      expect((await claim(on, "ann", "TTL", key)).status).toBe(201);
      const [row] = await database.sql<{ ttl_ms: number }[]>`select
        (extract(epoch from expires_at - created_at) * 1000)::float8 as ttl_ms from idempotency_keys where key = ${key}`;
      expect(row?.ttl_ms).toBe(200);
      await until(async () => {
        const [expired] = await database.sql<{ past: boolean }[]>`select expires_at <= clock_timestamp() as past
          from idempotency_keys where key = ${key}`;
        return expired?.past === true;
      }, "the key to expire");
      const other = await claim(on, "bob", "TTL", key);
      expect(other.status).toBe(201);
      expect(other.headers.get("idempotent-replayed")).toBeNull();
      const again = await claim(on, "ann", "TTL", key); // the key is bob's claim's now
      expectProblemBody(again, REUSED, "/api/coupons/claim");
    });
    expect(await holders("TTL")).toEqual(["ann", "bob"]);
  });
});

describe("the Idempotency-Key header's syntax", () => {
  it.each([
    ["empty", ""],
    ["256 characters", "k".repeat(256)],
    ["a non-ASCII character", "clé"],
    ["a tab", "a\tb"],
    ["DEL", "a\x7fb"],
    ["a bad escape in a quoted string", '"a\\x"'],
    ["an unescaped quote in a quoted string", '"a"b"'],
    ["a quoted string of 256 characters", `"${"k".repeat(256)}"`],
    ["only quotes", '""'],
  ])("refuses a key that is %s with VALIDATION_FAILED (400) on every route, applying nothing", async (_label, key) => {
    const name = `BAD_KEY ${_label}`;
    await couponClaimedBy(name, 2, ["bob"]);
    const keysBefore = await keyCount();
    const answers = [
      await create(api(), { name: `${name} NEW`, amount: 1 }, key),
      await claim(api(), "ann", name, key),
      await release(api(), name, "bob", key),
    ];
    for (const res of answers) {
      expect(res.headers.get("content-type")).toBe("application/problem+json");
      expect({ status: res.status, code: res.body.code, detail: res.body.detail }).toEqual({
        status: 400,
        code: "VALIDATION_FAILED",
        detail: KEY_RULE,
      });
    }
    expect(await couponCount(`${name} NEW`)).toBe(0);
    expect(await holders(name)).toEqual(["bob"]);
    expect(await keyCount()).toBe(keysBefore);
  });

  it("takes 255 characters, and a quoted string of 255 characters", async () => {
    await couponClaimedBy("KEY_255", 3, []);
    expect((await claim(api(), "ann", "KEY_255", "a".repeat(255))).status).toBe(201);
    expect((await claim(api(), "bob", "KEY_255", `"${"b".repeat(255)}"`)).status).toBe(201);
    expect(await stored("a".repeat(255))).toEqual({ outcome: "created" });
    expect(await stored("b".repeat(255))).toEqual({ outcome: "created" });
  });

  it('takes a quoted key and the bare key as one key: "abc" is abc, and \\" and \\\\ are unescaped', async () => {
    await couponClaimedBy("KEY_QUOTED", 3, []);
    const plain = newKey();
    const first = await claim(api(), "ann", "KEY_QUOTED", `"${plain}"`);
    expect(first.status).toBe(201);
    expectReplay(first, await claim(api(), "ann", "KEY_QUOTED", plain));
    // A backslash and a quote: bare, then as a quoted string with both escaped.
    const bareKey = `${newKey()}\\"q`;
    const bare = await claim(api(), "bob", "KEY_QUOTED", bareKey);
    expect(bare.status).toBe(201);
    const quoted = `"${bareKey.replaceAll("\\", "\\\\").replaceAll('"', '\\"')}"`;
    expect(quoted.endsWith('\\\\\\"q"')).toBe(true);
    expectReplay(bare, await claim(api(), "bob", "KEY_QUOTED", quoted));
    expect(await stored(bareKey)).toEqual({ outcome: "created" });
    expect(await holders("KEY_QUOTED")).toEqual(["ann", "bob"]);
  });
});

describe("requests without an Idempotency-Key", () => {
  /** The header names of an answer but those that differ by request (date) or are the key's own. */
  const headerNames = (res: ApiResponse) => [...res.headers.keys()].filter((name) => name !== "date").sort();

  it("answer as a keyed first request does, store nothing, and execute again when repeated", async () => {
    const keysBefore = await keyCount();
    const plain = {
      create: await create(api(), { name: "NO_KEY", amount: 2 }),
      claim: await claim(api(), "ann", "NO_KEY"),
      release: await release(api(), "NO_KEY", "ann"),
    };
    expect(await keyCount()).toBe(keysBefore);
    const withKey = {
      create: await create(api(), { name: "NO_KEY_KEYED", amount: 2 }, newKey()),
      claim: await claim(api(), "ann", "NO_KEY_KEYED", newKey()),
      release: await release(api(), "NO_KEY_KEYED", "ann", newKey()),
    };
    for (const step of ["create", "claim", "release"] as const) {
      const [a, b] = [plain[step], withKey[step]];
      expect(a.status, step).toBe(b.status);
      expect(headerNames(a), step).toEqual(headerNames(b));
      expect(headerNames(a), step).not.toContain("idempotent-replayed");
      expect(Object.keys(a.body), step).toEqual(Object.keys(b.body));
    }
    expect(plain.create.body).toEqual({ name: "NO_KEY", amount: 2, remaining_amount: 2 });
    expect(plain.claim.body).toMatchObject({ user_id: "ann", coupon_name: "NO_KEY" });
    expect(plain.release.body).toMatchObject({ user_id: "ann", coupon_name: "NO_KEY", remaining_amount: 2 });
    // Repeated, each executes again: the answers of a second attempt, not the first ones.
    expectFresh(await create(api(), { name: "NO_KEY", amount: 2 }), 409, "COUPON_EXISTS");
    expectFresh(await release(api(), "NO_KEY", "ann"), 404, "CLAIM_NOT_FOUND");
    expect((await claim(api(), "ann", "NO_KEY")).status).toBe(201);
    expectFresh(await claim(api(), "ann", "NO_KEY"), 409, "ALREADY_CLAIMED");
    expect(await keyCount()).toBe(keysBefore + 3);
    expect(await holders("NO_KEY")).toEqual(["ann"]);
  });
});

describe("with ADMIN_TOKEN", () => {
  it("refuses a keyed create or release without the token (401) and stores nothing under the key", async () => {
    await couponClaimedBy("GUARDED_KEY", 2, ["ann"]);
    await withApp({ adminToken: TOKEN }, async (on) => {
      const keys = { create: newKey(), release: newKey() };
      const bearer = { authorization: `Bearer ${TOKEN}` };
      expectFresh(await create(on, { name: "GUARDED_KEY_NEW", amount: 1 }, keys.create), 401, "UNAUTHORIZED");
      expectFresh(await release(on, "GUARDED_KEY", "ann", keys.release), 401, "UNAUTHORIZED");
      expect([await stored(keys.create), await stored(keys.release)]).toEqual([undefined, undefined]);
      expect(await couponCount("GUARDED_KEY_NEW")).toBe(0);
      expect(await holders("GUARDED_KEY")).toEqual(["ann"]);
      // With the token, the same keys execute: nothing was kept from the refusals.
      const created = await create(on, { name: "GUARDED_KEY_NEW", amount: 1 }, keys.create, bearer);
      expect({ status: created.status, replayed: created.headers.get("idempotent-replayed") }).toEqual({
        status: 201,
        replayed: null,
      });
      const released = await release(on, "GUARDED_KEY", "ann", keys.release, bearer);
      expect({ status: released.status, replayed: released.headers.get("idempotent-replayed") }).toEqual({
        status: 200,
        replayed: null,
      });
    });
    expect(await holders("GUARDED_KEY")).toEqual([]);
  });
});
