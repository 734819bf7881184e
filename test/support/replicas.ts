// Three replicas of the service on one test database for the enclosing suite, as in production: each
// with its own pool, its own real change feed and (optionally) its own clock. The last one listens
// through a fault proxy of the test's own, so its feed can be cut while its pool keeps working (or,
// with poolThroughProxy, its pool with it).
import { afterAll, beforeAll } from "bun:test";
import { loadConfig } from "../../src/config";
import { createLogger } from "../../src/log";
import type { ChangeFeed } from "../../src/store/changes";
import { type DatabaseHandle, openPostgres } from "../../src/store/client";
import { buildApp, listen, type TestAppOptions } from "./app";
import { createTestDatabase, type TestDatabase } from "./database";
import { type Client, client } from "./http";
import { type FaultProxy, startFaultProxy } from "./proxy";

export interface Replicas {
  database: TestDatabase;
  /** In front of the last replica's listening connection (and its pool, with poolThroughProxy). */
  proxy: FaultProxy;
  clients: Client[];
  feeds: ChangeFeed[];
}

/** Polls `check` every 5 ms until it holds; fails after `ms`. Returns how long it took. */
export async function until(check: () => boolean | Promise<boolean>, what: string, ms = 5000): Promise<number> {
  const start = performance.now();
  while (!(await check())) {
    if (performance.now() - start > ms) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(5);
  }
  return performance.now() - start;
}

/** A metric of one replica without labels, read from its /metrics. */
export async function metric(replica: Client, name: string): Promise<number> {
  const text = (await replica.get("/metrics")).body as string;
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return Number(line?.split(" ")[1]);
}

export interface ReplicaOptions {
  /** Each replica's clock runs this far from the real one (default three at 0). */
  skewsMs?: number[];
  scheduleMarginMs?: number;
  /** The last replica's pool goes through the proxy too, so cutting it breaks its claims mid-batch. */
  poolThroughProxy?: boolean;
  /** More of the app's options, for every replica (timeoutMs, …). */
  app?: TestAppOptions;
  /** What each replica's app gets instead of its feed (a deliberately broken build). */
  wrapFeed?: (feed: ChangeFeed, replica: number) => ChangeFeed;
  /** MEMORY_LEASE_MS of every replica (default 200: a release or PATCH waits it out, so kept short here). */
  leaseMs?: number;
}

/**
 * Starts one replica per entry of `skewsMs` (its clock runs that far from the real one) before the
 * suite, once every feed is live, and stops them all after it. Fields are set inside tests only.
 */
export function replicasForSuite(options: ReplicaOptions = {}): Replicas {
  const skews = options.skewsMs ?? [0, 0, 0];
  const suite = {} as Replicas;
  let handles: DatabaseHandle[] = [];
  let stops: (() => Promise<void>)[] = [];
  beforeAll(async () => {
    suite.database = await createTestDatabase({ poolMax: 2 });
    suite.proxy = await startFaultProxy(suite.database.url);
    const { url } = suite.database;
    const config = loadConfig({ DATABASE_URL: url, DATABASE_POOL_MAX: "5" });
    const last = (i: number) => i === skews.length - 1;
    const pool = (i: number) => (last(i) && options.poolThroughProxy ? suite.proxy.url : url);
    handles = skews.map((_, i) => openPostgres(pool(i), config, last(i) ? suite.proxy.url : url));
    const log = createLogger("silent");
    suite.feeds = await Promise.all(
      handles.map((handle, i) =>
        handle.listen({ log, leaseMs: options.leaseMs ?? 200, wallClock: () => Date.now() + (skews[i] ?? 0) }),
      ),
    );
    const feed = (i: number) => options.wrapFeed?.(suite.feeds[i] as ChangeFeed, i) ?? suite.feeds[i];
    const servers = handles.map((handle, i) =>
      listen(
        buildApp(handle.db, { ...options.app, feed: feed(i), scheduleMarginMs: options.scheduleMarginMs ?? 1000 }).app,
      ),
    );
    suite.clients = servers.map((server) => client(server.baseUrl));
    stops = servers.map((server) => server.stop);
    await until(() => suite.feeds.every((feed) => feed.live), "every feed live");
  });
  afterAll(async () => {
    await Promise.all(stops.map((stop) => stop()));
    await Promise.all(suite.feeds.map((feed) => feed.close()));
    await Promise.all(handles.map((handle) => handle.close()));
    await suite.proxy.close();
    await suite.database.drop();
  }, 30_000); // each pool gets up to 5 s for its queries: more than a hook's default
  return suite;
}
