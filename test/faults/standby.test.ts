// A hot standby before its promotion is no database to write to, and a database that cannot be reached
// must not be retried in a tight loop. Pointed at a standby, the service says it is unavailable
// (readiness 503, every write 503 + Retry-After, never a 500), and both its pool and its change feed
// back off between connection attempts while no host is usable.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import postgres from "postgres";
import { loadConfig } from "../../src/config";
import { createLogger } from "../../src/log";
import { listenPostgres } from "../../src/store/changes";
import { type DatabaseHandle, openPostgres } from "../../src/store/client";
import { postgresOptions } from "../../src/store/connect";
import { isDatabaseUnavailable } from "../../src/store/errors";
import { buildApp } from "../support/app";
import { type ReplicatedPair, startReplicatedPair } from "../support/cluster";
import { defaultLeaseMs } from "../support/feed";
import { type Client, client } from "../support/http";
import { type FaultProxy, startFaultProxy } from "../support/proxy";
import { until } from "../support/replicas";

const DATABASE = "shop";
const COUPON = "STANDBY_SALE";
/** How long each outage is watched while connection attempts are counted. */
const OUTAGE_MS = 3000;
// With the backoff of store/client.ts and store/changes.ts (50 ms doubling to 1 s), a feed makes about 8
// attempts in 3 s, and a pool of 4 over two hosts about 30; without one they number in the hundreds.
const FEED_BOUND = 15;
const POOL_BOUND = 60;

let pair: ReplicatedPair;
const proxies: FaultProxy[] = [];
const log = createLogger("silent");

/** The settings of the service under test at `url`, with a short connect timeout. */
const config = (url: string) =>
  loadConfig({ DATABASE_URL: url, DATABASE_POOL_MAX: "4", DATABASE_CONNECT_TIMEOUT_MS: "1000" });

/** A proxy of the test's own in front of the server `url` names; refusing every connection when `cut`. */
async function proxy(url: string, cut = false): Promise<FaultProxy> {
  const started = await startFaultProxy(url);
  if (cut) started.cut();
  proxies.push(started);
  return started;
}

/** A URL over two servers, the first to be tried first, asking for the read-write one. */
const multiHost = (first: string, second: string) =>
  `postgres://postgres@127.0.0.1:${new URL(first).port},127.0.0.1:${new URL(second).port}/${DATABASE}?target_session_attrs=read-write`;

beforeAll(async () => {
  pair = await startReplicatedPair();
  const admin = postgres(pair.primary.url(), { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${DATABASE}`);
  await admin.end();
  const url = pair.primary.url(DATABASE);
  const primary = openPostgres(url, config(url));
  await primary.migrate();
  expect((await client(buildApp(primary.db).app).createCoupon(COUPON, 10)).status).toBe(201);
  await primary.close();
  // The coupon must be on the standby before the primary goes.
  const standby = postgres(pair.standby.url(DATABASE), { max: 1, onnotice: () => {} });
  const replayed = () => standby`select 1 from coupons where name = ${COUPON}`.then((rows) => rows.length > 0);
  await until(() => replayed().catch(() => false), "the coupon replayed on the standby", 10_000);
  await standby.end();
}, 60_000);
afterAll(async () => {
  await Promise.all(proxies.map((p) => p.close()));
  await pair.stop();
}, 20_000);

/** Counts the connections `count` sees while the feed at `url` tries to listen for OUTAGE_MS. */
async function feedAttempts(url: string, count: () => number): Promise<number> {
  const feed = listenPostgres(url, config(url), { log, leaseMs: defaultLeaseMs, heartbeatMs: 200 });
  try {
    const before = count();
    await Bun.sleep(OUTAGE_MS);
    expect(feed.live).toBe(false);
    return count() - before;
  } finally {
    await feed.close();
  }
}

describe("the change feed backs off between attempts while it cannot listen", () => {
  it("when the primary dies and only a hot standby is left", async () => {
    const url = pair.url(DATABASE);
    const feed = listenPostgres(url, config(url), { log, leaseMs: defaultLeaseMs, heartbeatMs: 200 });
    try {
      await until(() => feed.live, "the feed live on the primary");
      pair.crashPrimary(); // from here on, the tests below see only the standby
      const before = pair.standby.connectionsReceived();
      await Bun.sleep(OUTAGE_MS);
      expect(feed.live).toBe(false);
      expect(pair.standby.connectionsReceived() - before).toBeGreaterThan(1);
      expect(pair.standby.connectionsReceived() - before).toBeLessThanOrEqual(FEED_BOUND);
    } finally {
      await feed.close();
    }
  }, 15_000);

  it("on a hot standby named alone, where each LISTEN fails", async () => {
    const attempts = await feedAttempts(pair.standby.url(DATABASE), () => pair.standby.connectionsReceived());
    expect(attempts).toBeGreaterThan(1);
    expect(attempts).toBeLessThanOrEqual(FEED_BOUND);
  }, 15_000);

  it("on a server that closes every connection at once", async () => {
    const through = await proxy(pair.standby.url(DATABASE), true);
    const attempts = await feedAttempts(through.url, through.connections);
    expect(attempts).toBeGreaterThan(1);
    expect(attempts).toBeLessThanOrEqual(FEED_BOUND);
  }, 15_000);
});

const targets = [
  { name: "a URL over the dead primary and the standby", url: () => pair.url(DATABASE), database: "unreachable" },
  { name: "a URL naming the standby alone", url: () => pair.standby.url(DATABASE), database: "read-only" },
];

for (const target of targets) {
  describe(`the service on a hot standby, through ${target.name}`, () => {
    let handle: DatabaseHandle;
    let api: Client;
    beforeAll(() => {
      pair.crashPrimary(); // done already by the feed's test above, unless it was skipped
      handle = openPostgres(target.url(), config(target.url()));
      api = client(buildApp(handle.db, { timeoutMs: 3000 }).app);
    });
    afterAll(() => handle.close(100));

    it(`is not ready: /health/ready answers 503, database ${target.database}`, async () => {
      const ready = await api.get("/health/ready");
      expect(ready.status).toBe(503);
      expect(ready.body.checks).toEqual({ database: target.database, migrations: "unknown" });
    });

    it("answers a create, a claim, a PATCH and a release 503 with Retry-After, never a 500", async () => {
      const answers = await Promise.all([
        api.createCoupon("NEW_SALE", 5),
        api.claim("standby-user", COUPON),
        api.call("PATCH", `/api/coupons/${COUPON}`, { json: { active: false } }),
        api.call("DELETE", `/api/coupons/${COUPON}/claims/standby-user`),
      ]);
      for (const answer of answers) {
        expect({ status: answer.status, code: answer.body.code }).toEqual({
          status: 503,
          code: "SERVICE_UNAVAILABLE",
        });
        expect(Number(answer.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
      }
    });
  });
}

/** Requests that need the database, from 8 loops, for `ms`: readiness probes and claims. */
async function keepAsking(api: Client, ms: number): Promise<void> {
  const end = Date.now() + ms;
  await Promise.all(
    Array.from({ length: 8 }, async (_, loop) => {
      for (let i = 0; Date.now() < end; i++) {
        await (i % 2 ? api.get("/health/ready") : api.claim(`asker-${loop}-${i}`, COUPON));
      }
    }),
  );
}

describe("the pool while no host is usable", () => {
  beforeAll(() => pair.crashPrimary());

  it("ends while a connection attempt fails: end() resolves and the query is refused", async () => {
    const through = await proxy(pair.standby.url(DATABASE));
    through.stall(); // the start-up message is held: the attempt is under way
    const sql = postgres(through.url, { ...postgresOptions(config(through.url)), max: 1 });
    const query = sql`select ${1}::int as one`.then(
      () => "answered",
      (error) => (isDatabaseUnavailable(error) ? "unavailable" : String(error)),
    );
    await until(() => through.connections() > 0, "the connection attempt");
    const ending = sql.end(); // no timeout: it resolves only when the connection is done
    through.cut(); // the server closes during start-up, and no other host is left
    await ending;
    expect(await query).toBe("unavailable");
  }, 10_000);
  for (const second of ["a server that closes every connection at once", "a hot standby"]) {
    it(`backs off between attempts: one host closes every connection at once, the other is ${second}`, async () => {
      const first = await proxy(pair.standby.url(DATABASE), true);
      const other = await proxy(pair.standby.url(DATABASE), second !== "a hot standby");
      const url = multiHost(first.url, other.url);
      const handle = openPostgres(url, config(url));
      try {
        await keepAsking(client(buildApp(handle.db, { timeoutMs: 1000 }).app), OUTAGE_MS);
        expect(other.connections()).toBeGreaterThan(0);
        expect(first.connections() + other.connections()).toBeLessThanOrEqual(POOL_BOUND);
      } finally {
        await handle.close(100); // claims still waiting for a connection are not this test's subject
      }
    }, 15_000);
  }
});
