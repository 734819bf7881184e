// A failover loses nothing: a primary and a streaming standby, the service on a URL over both
// (target_session_attrs=read-write), 200 claims at a time on one coupon; the standby's WAL held back,
// kill -9 of the primary's postmaster, the standby promoted. With synchronous replication every
// acknowledged claim (every 201) is on the new primary; with asynchronous replication the same check
// finds acknowledged claims missing, which proves it can fail. After the failover the stock invariant
// holds, the change feed is live again and answers from memory are right. While no standby confirms,
// synchronous replication makes writes wait: claims answer 503 at their deadline and are safe to retry.
// The WAL is held in the proxy the standby streams through (cluster.ts), not by stopping the standby's
// WAL receiver: what the primary had already sent would wait in the receiver's socket and arrive after
// all. Held there, a commit made asynchronously is acknowledged and never reaches the standby, and one
// made synchronously waits: the outcome is the same every run, no need for many rounds.
import { afterAll, describe, expect, it } from "bun:test";
import postgres from "postgres";
import { loadConfig } from "../../src/config";
import { createLogger } from "../../src/log";
import type { ChangeFeed } from "../../src/store/changes";
import { type DatabaseHandle, openPostgres } from "../../src/store/client";
import { buildApp } from "../support/app";
import { type ReplicatedPair, startReplicatedPair } from "../support/cluster";
import { defaultLeaseMs } from "../support/feed";
import { type Client, client } from "../support/http";
import { expectStockInvariant } from "../support/invariant";
import { metric, until } from "../support/replicas";

const DATABASE = "shop";
const HOT = "FAILOVER_HOT";
const SOLD = "FAILOVER_SOLD";
const WORKERS = 200;
const REQUEST_TIMEOUT_MS = 2000;

interface Claim {
  user: string;
  status: number;
  startedAt: number;
}

/** Claims HOT with fresh users from WORKERS loops until `stop()`; every answer is recorded. */
function claimLoad(api: Client) {
  const claims: Claim[] = [];
  let running = true;
  const done = Promise.all(
    Array.from({ length: WORKERS }, async (_, worker) => {
      for (let i = 0; running; i++) {
        const user = `w${worker}-${i}`;
        const startedAt = performance.now();
        const { status } = await api.claim(user, HOT);
        claims.push({ user, status, startedAt });
        if (status !== 201) await Bun.sleep(20); // a refused claim is retried by a real client too
      }
    }),
  );
  return {
    claims,
    acknowledged: (since = 0) => claims.filter((c) => c.status === 201 && c.startedAt >= since).length,
    stop: async () => {
      running = false;
      await done;
    },
  };
}

interface Failover {
  /** Users whose claim was answered 201. */
  acknowledged: string[];
  /** Of those, the ones the promoted standby has no claim for. */
  lost: string[];
  /** Statuses other than 201 and 503 (a 500 would be one). */
  unexpected: number[];
  /** The new primary, for checks in SQL. */
  sql: postgres.Sql;
  api: Client;
  feed: ChangeFeed;
}

const opened: { pair?: ReplicatedPair; handle?: DatabaseHandle; feed?: ChangeFeed; sql?: postgres.Sql }[] = [];
afterAll(async () => {
  for (const { pair, handle, feed, sql } of opened) {
    await feed?.close();
    await handle?.close(100);
    await sql?.end();
    await pair?.stop();
  }
}, 30_000);

/** Runs one failover under load, replication synchronous or not, and reports what the new primary has. */
async function failover(synchronous: boolean): Promise<Failover> {
  const resources: (typeof opened)[number] = {};
  opened.push(resources);
  const pair = await startReplicatedPair({ synchronous, relay: true });
  resources.pair = pair;
  const admin = postgres(pair.primary.url(), { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${DATABASE}`);
  await admin.end();

  const url = pair.url(DATABASE);
  const config = loadConfig({ DATABASE_URL: url, DATABASE_POOL_MAX: "10", DATABASE_CONNECT_TIMEOUT_MS: "1000" });
  const handle = openPostgres(url, config);
  resources.handle = handle;
  await handle.migrate();
  const feed = await handle.listen({ log: createLogger("silent"), leaseMs: defaultLeaseMs, heartbeatMs: 200 });
  resources.feed = feed;
  const api = client(buildApp(handle.db, { feed, timeoutMs: REQUEST_TIMEOUT_MS }).app);
  expect((await api.createCoupon(HOT, 10_000_000)).status).toBe(201);
  expect((await api.createCoupon(SOLD, 1)).status).toBe(201);
  expect((await api.claim("sold-holder", SOLD)).status).toBe(201);
  await until(() => feed.live, "the change feed live");

  const load = claimLoad(api);
  await until(() => load.acknowledged() >= WORKERS, "claims flowing", 20_000);
  // Hold the WAL back in the relay: nothing written from now on reaches the standby.
  const heldAt = performance.now();
  pair.relay?.stall("to-client");
  const primary = postgres(pair.primary.url(DATABASE), { max: 1, onnotice: () => {} });
  if (synchronous) {
    // Commits made since wait for the standby: none of them can have been acknowledged.
    const waiting = async () =>
      (await primary`select count(*)::int as n from pg_stat_activity where wait_event = 'SyncRep'`)[0]?.n > 0;
    await until(waiting, "a commit waiting for the standby", 10_000);
  } else {
    // Commits made since are acknowledged at once, and the standby will never have them.
    await until(() => load.acknowledged(heldAt) > 0, "a claim acknowledged after the hold", 10_000);
  }
  await primary.end();
  pair.crashPrimary();
  pair.relay?.cut(); // the held WAL dies with the link
  await pair.promote();
  const promotedAt = performance.now();
  await until(() => load.acknowledged(promotedAt) >= WORKERS, "claims flowing on the new primary", 20_000);
  await load.stop();

  const sql = postgres(pair.standby.url(DATABASE), { max: 1, onnotice: () => {} });
  resources.sql = sql;
  const stored = new Set(
    (await sql<{ user_id: string }[]>`select user_id from claims where coupon_name = ${HOT}`).map((r) => r.user_id),
  );
  const acknowledged = load.claims.filter((c) => c.status === 201).map((c) => c.user);
  return {
    acknowledged,
    lost: acknowledged.filter((user) => !stored.has(user)),
    unexpected: load.claims.filter((c) => c.status !== 201 && c.status !== 503).map((c) => c.status),
    sql,
    api,
    feed,
  };
}

/** After the failover: the invariant, the feed live again, and memory answering sold out then forgetting it. */
async function expectServiceRight({ sql, api, feed }: Failover): Promise<void> {
  await expectStockInvariant(sql, HOT);
  await expectStockInvariant(sql, SOLD);
  await until(() => feed.live, "the change feed live on the new primary", 10_000);
  // Memory learns a refusal in the background: claim until one is answered from memory, SOLD_OUT.
  let late = 0;
  const fromMemory = async () => {
    const before = await metric(api, "coupon_claims_from_memory_total");
    const answer = await api.claim(`late-${late++}`, SOLD);
    expect(answer.body.code).toBe("SOLD_OUT");
    return (await metric(api, "coupon_claims_from_memory_total")) > before;
  };
  await until(fromMemory, "a SOLD_OUT answered from memory", 5000);
  const release = await api.call("DELETE", `/api/coupons/${SOLD}/claims/sold-holder`);
  expect(release.status).toBe(200);
  // The release reached memory through the feed: the next claim wins instead of SOLD_OUT from memory.
  await until(async () => (await api.claim("after-release", SOLD)).status !== 409, "memory to forget SOLD_OUT", 5000);
  const rows = await sql`select user_id from claims where coupon_name = ${SOLD}`;
  expect(rows.map((r) => r.user_id)).toEqual(["after-release"]);
}

describe("kill -9 of the primary under a 200-way claim load, then promotion of the standby", () => {
  it("asynchronous replication: the check finds acknowledged claims missing on the new primary", async () => {
    const result = await failover(false);
    expect(result.unexpected).toEqual([]);
    expect(result.lost.length).toBeGreaterThan(0);
    expect(result.lost.length).toBeLessThan(result.acknowledged.length);
    await expectServiceRight(result);
  }, 60_000);

  it("synchronous replication: every acknowledged claim is on the new primary", async () => {
    const result = await failover(true);
    expect(result.unexpected).toEqual([]);
    expect(result.acknowledged.length).toBeGreaterThan(2 * WORKERS);
    expect(result.lost).toEqual([]);
    await expectServiceRight(result);
  }, 60_000);
});

describe("synchronous replication while no standby confirms", () => {
  it("makes writes wait: a claim answers 503 + Retry-After at its deadline, readiness stays 200, the retry is safe", async () => {
    const resources: (typeof opened)[number] = {};
    opened.push(resources);
    const pair = await startReplicatedPair({ synchronous: true, relay: true });
    resources.pair = pair;
    const admin = postgres(pair.primary.url(), { max: 1, onnotice: () => {} });
    await admin.unsafe(`create database ${DATABASE}`);
    await admin.end();
    const url = pair.url(DATABASE);
    const handle = openPostgres(url, loadConfig({ DATABASE_URL: url, DATABASE_CONNECT_TIMEOUT_MS: "1000" }));
    resources.handle = handle;
    await handle.migrate();
    const api = client(buildApp(handle.db, { timeoutMs: REQUEST_TIMEOUT_MS }).app);
    expect((await api.createCoupon(HOT, 10)).status).toBe(201);
    expect((await api.claim("before", HOT)).status).toBe(201);

    pair.relay?.stall("to-client"); // the standby hears nothing more, so confirms nothing more
    const claiming = api.claim("waiting", HOT);
    const sql = postgres(pair.primary.url(DATABASE), { max: 1, onnotice: () => {} });
    resources.sql = sql;
    const waiting = async () =>
      (await sql`select count(*)::int as n from pg_stat_activity where wait_event = 'SyncRep'`)[0]?.n > 0;
    await until(waiting, "the claim's commit waiting for the standby", 10_000);
    const [ready, read] = await Promise.all([api.get("/health/ready"), api.getCoupon(HOT)]);
    const claim = await claiming;
    expect({ status: claim.status, code: claim.body.code }).toEqual({ status: 503, code: "SERVICE_UNAVAILABLE" });
    expect(Number(claim.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(ready.status).toBe(200);
    expect(read.body.claimed_by).toEqual(["before"]);

    // Once the standby confirms again the waiting commit completes: the retry finds it, or makes it.
    pair.relay?.restore();
    const retry = await api.claim("waiting", HOT);
    expect([201, "ALREADY_CLAIMED"]).toContain(retry.status === 201 ? 201 : retry.body.code);
    const holders = await sql<{ user_id: string }[]>`select user_id from claims where coupon_name = ${HOT} order by id`;
    expect(holders.map((row) => row.user_id)).toEqual(["before", "waiting"]);
  }, 60_000);
});
