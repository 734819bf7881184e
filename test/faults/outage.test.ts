// Database outages mid-load, through a proxy of the test's own: clients get 503 + Retry-After within a
// bounded time (never a 500, never a hang), readiness says 503, the service recovers by itself, and
// every acknowledged claim is in the database afterwards.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { loadConfig } from "../../src/config";
import { type DatabaseHandle, openPostgres } from "../../src/store/client";
import { buildApp, listen } from "../support/app";
import { createTestDatabase, type TestDatabase } from "../support/database";
import { type Client, client } from "../support/http";
import { expectStockInvariant } from "../support/invariant";
import { type FaultProxy, startFaultProxy } from "../support/proxy";

const DEADLINE_MS = 1500;
// The most any request may take: its deadline plus scheduling slack on a loaded 2-core machine.
const BOUND_MS = DEADLINE_MS + 1000;

let database: TestDatabase;
let proxy: FaultProxy;
let handle: DatabaseHandle;
let api: Client;
let stop: () => Promise<void>;

beforeAll(async () => {
  database = await createTestDatabase();
  proxy = await startFaultProxy(database.url);
  const config = loadConfig({
    DATABASE_URL: proxy.url,
    DATABASE_POOL_MAX: "5",
    DATABASE_CONNECT_TIMEOUT_MS: "500",
    DATABASE_STATEMENT_TIMEOUT_MS: "1000",
  });
  handle = openPostgres(proxy.url, config);
  // A sold-out coupon with more claimers than this is decided by the database, not from memory.
  const server = listen(buildApp(handle.db, { timeoutMs: DEADLINE_MS, soldOutCacheMax: 2 }).app);
  api = client(server.baseUrl);
  stop = server.stop;
});
afterAll(async () => {
  await stop();
  await handle.close();
  await proxy.close();
  await database.drop();
}, 20_000);

interface Outcome {
  user: string;
  status: number;
  code?: string;
  retryAfter: string | null;
  startedAt: number;
  ms: number;
}

/** Claims `coupon` with fresh users from `workers` loops for `durationMs`, recording every answer. */
async function claimLoad(coupon: string, workers: number, durationMs: number): Promise<Outcome[]> {
  const outcomes: Outcome[] = [];
  const end = Date.now() + durationMs;
  await Promise.all(
    Array.from({ length: workers }, async (_, w) => {
      for (let i = 0; Date.now() < end; i++) {
        const user = `${coupon}-w${w}-${i}`;
        const startedAt = Date.now();
        const res = await api.claim(user, coupon);
        outcomes.push({
          user,
          status: res.status,
          code: res.body?.code,
          retryAfter: res.headers.get("retry-after"),
          startedAt,
          ms: Date.now() - startedAt,
        });
      }
    }),
  );
  return outcomes;
}

/** Polls readiness until it answers `status`, returning true if it did within `ms`. */
async function readinessBecomes(status: number, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if ((await api.get("/health/ready")).status === status) return true;
    await Bun.sleep(50);
  }
  return false;
}

/** What every outage must leave behind: bounded answers, only 201/503, and no lost 201. */
async function expectNoAcknowledgedClaimLost(coupon: string, outcomes: Outcome[]) {
  expect(outcomes.filter((o) => o.status !== 201 && o.status !== 503)).toEqual([]);
  expect(Math.max(...outcomes.map((o) => o.ms))).toBeLessThan(BOUND_MS);
  for (const o of outcomes.filter((o) => o.status === 503)) {
    expect([o.code, o.retryAfter]).toEqual(["SERVICE_UNAVAILABLE", "1"]);
  }
  const stored = new Set(
    (await database.sql<{ user_id: string }[]>`select user_id from claims where coupon_name = ${coupon}`).map(
      (r) => r.user_id,
    ),
  );
  const acknowledged = outcomes.filter((o) => o.status === 201).map((o) => o.user);
  expect(acknowledged.filter((user) => !stored.has(user))).toEqual([]);
  await expectStockInvariant(database.sql, coupon);
}

/** Runs `fault` 600 ms into a 6 s load on a fresh coupon, restores after 2.5 s, and returns the timeline. */
async function outageDuringLoad(coupon: string, fault: () => void) {
  expect((await api.createCoupon(coupon, 1_000_000)).status).toBe(201);
  const load = claimLoad(coupon, 8, 6000);
  await Bun.sleep(600);
  const faultAt = Date.now();
  fault();
  const restored = Bun.sleep(2500).then(() => {
    proxy.restore();
    return Date.now();
  });
  // While the database is away: readiness, reads and creates all answer 503 problems too.
  const [notReady, read, create] = await Promise.all([
    readinessBecomes(503, 2000),
    api.getCoupon(coupon),
    api.createCoupon(`${coupon}-during`, 1),
  ]);
  expect(notReady).toBe(true);
  expect([read.status, read.body.code]).toEqual([503, "SERVICE_UNAVAILABLE"]);
  expect([create.status, create.body.code]).toEqual([503, "SERVICE_UNAVAILABLE"]);
  const restoredAt = await restored;
  return { faultAt, restoredAt, outcomes: await load };
}

describe("a database outage under load", () => {
  it("answers 503 while PostgreSQL is unreachable, recovers by itself, and loses no 201", async () => {
    const { faultAt, restoredAt, outcomes } = await outageDuringLoad("cut", () => proxy.cut());

    expect(outcomes.filter((o) => o.startedAt < faultAt && o.status === 201).length).toBeGreaterThan(0);
    // Requests in flight when the fault hit (it outlasts their deadline) were answered 503.
    expect(outcomes.filter((o) => o.startedAt + o.ms > faultAt && o.status === 503).length).toBeGreaterThan(0);
    // Recovered without a restart: claims started after the restore succeed again.
    expect(outcomes.filter((o) => o.startedAt > restoredAt + 500 && o.status === 201).length).toBeGreaterThan(0);
    expect(await readinessBecomes(200, 3000)).toBe(true);
    await expectNoAcknowledgedClaimLost("cut", outcomes);
  }, 30_000);

  it("answers 503 within its deadline while the connection hangs, then recovers", async () => {
    const { faultAt, restoredAt, outcomes } = await outageDuringLoad("stall", () => proxy.stall());

    // Requests in flight when the fault hit (it outlasts their deadline) were answered 503.
    expect(outcomes.filter((o) => o.startedAt + o.ms > faultAt && o.status === 503).length).toBeGreaterThan(0);
    expect(outcomes.filter((o) => o.startedAt > restoredAt + 500 && o.status === 201).length).toBeGreaterThan(0);
    expect(await readinessBecomes(200, 3000)).toBe(true);
    await expectNoAcknowledgedClaimLost("stall", outcomes);
  }, 30_000);

  it("answers claims on a sold-out coupon too big to hold in memory with 503 within their deadline while the connection hangs", async () => {
    expect((await api.createCoupon("gone-big", 5)).status).toBe(201);
    for (const user of ["g1", "g2", "g3", "g4", "g5"]) expect((await api.claim(user, "gone-big")).status).toBe(201);
    expect((await api.claim("late", "gone-big")).body.code).toBe("SOLD_OUT");
    proxy.stall();
    try {
      const started = Date.now();
      const answers = await Promise.all(["g1", "late", "g3", "later"].map((user) => api.claim(user, "gone-big")));
      expect(Date.now() - started).toBeLessThan(BOUND_MS);
      for (const answer of answers) {
        expect([answer.status, answer.body.code, answer.headers.get("retry-after")]).toEqual([
          503,
          "SERVICE_UNAVAILABLE",
          "1",
        ]);
      }
    } finally {
      proxy.restore();
    }
    // Once the database answers again, so does the coupon, holders first.
    expect(await readinessBecomes(200, 3000)).toBe(true);
    expect((await api.claim("g1", "gone-big")).body.code).toBe("ALREADY_CLAIMED");
    expect((await api.claim("later", "gone-big")).body.code).toBe("SOLD_OUT");
    await expectStockInvariant(database.sql, "gone-big");
  }, 30_000);
});
