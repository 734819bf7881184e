// Three replicas of the service on one test database for the enclosing suite, as in production: each
// with its own pool, its own real change feed and (optionally) its own clock. The last one listens
// through a fault proxy of the test's own, so its feed can be cut while its pool keeps working.
import { afterAll, beforeAll } from "bun:test";
import { loadConfig } from "../../src/config";
import type { ChangeFeed } from "../../src/db/changes";
import { type DatabaseHandle, openPostgres } from "../../src/db/client";
import { createLogger } from "../../src/log";
import { buildApp, listen } from "./app";
import { createTestDatabase, type TestDatabase } from "./database";
import { type Client, client } from "./http";
import { type FaultProxy, startFaultProxy } from "./proxy";

export interface Replicas {
  database: TestDatabase;
  /** In front of the last replica's listening connection. */
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

/**
 * Starts one replica per entry of `skewsMs` (its clock runs that far from the real one) before the
 * suite, once every feed is live, and stops them all after it. Fields are set inside tests only.
 */
export function replicasForSuite(options: { skewsMs?: number[]; scheduleMarginMs?: number } = {}): Replicas {
  const skews = options.skewsMs ?? [0, 0, 0];
  const suite = {} as Replicas;
  let handles: DatabaseHandle[] = [];
  let stops: (() => Promise<void>)[] = [];
  beforeAll(async () => {
    suite.database = await createTestDatabase({ poolMax: 2 });
    suite.proxy = await startFaultProxy(suite.database.url);
    const { url } = suite.database;
    const config = loadConfig({ DATABASE_URL: url, DATABASE_POOL_MAX: "5" });
    handles = skews.map((_, i) => openPostgres(url, config, i === skews.length - 1 ? suite.proxy.url : url));
    const log = createLogger("silent");
    suite.feeds = await Promise.all(
      handles.map((handle, i) =>
        handle.listen({ log, heartbeatMs: 200, wallClock: () => Date.now() + (skews[i] ?? 0) }),
      ),
    );
    const servers = handles.map((handle, i) =>
      listen(buildApp(handle.db, { feed: suite.feeds[i], scheduleMarginMs: options.scheduleMarginMs ?? 1000 }).app),
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
  });
  return suite;
}
