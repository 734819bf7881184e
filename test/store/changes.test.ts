// The change feed: a committed change reaches every listener, a rolled-back one never does; the feed
// is live only while its connection is known good (cut or stalled, it says so at once or within a
// heartbeat) and comes back by itself; it measures the database's clock against the process's.
import { describe, expect, it } from "bun:test";
import { sql } from "drizzle-orm";
import { loadConfig } from "../../src/config";
import { createLogger } from "../../src/log";
import { announceChange, type ChangeFeed, listenPostgres } from "../../src/store/changes";
import { openPglite } from "../../src/store/client";
import { createTestDatabase } from "../support/database";
import { defaultLeaseMs } from "../support/feed";
import { proxiedDatabaseForSuite } from "../support/proxy";

const suite = proxiedDatabaseForSuite();

const config = () => loadConfig({ DATABASE_CONNECT_TIMEOUT_MS: "1000" });
const log = createLogger("silent");

async function until(check: () => boolean, what: string, ms = 5000): Promise<void> {
  const start = performance.now();
  while (!check()) {
    if (performance.now() - start > ms) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(5);
  }
}

/** A feed with everything it reported, in order. */
function recorded(feed: ChangeFeed) {
  const events: string[] = [];
  feed.subscribe({ change: (name) => events.push(`change ${name}`), lost: () => events.push("lost") });
  return events;
}

describe("listenPostgres", () => {
  it("delivers a change once its transaction commits, and never one that rolled back", async () => {
    const feed = listenPostgres(suite.database.url, config(), { log, leaseMs: defaultLeaseMs });
    const events = recorded(feed);
    await until(() => feed.live, "live");
    await suite.database.handle.db.transaction(async (tx) => {
      await tx.execute(announceChange("kept"));
      await Bun.sleep(50);
      expect(events).toEqual([]); // not before the commit
    });
    await suite.database.handle.db
      .transaction(async (tx) => {
        await tx.execute(announceChange("undone"));
        throw new Error("roll back");
      })
      .catch(() => {});
    await suite.database.handle.db.execute(announceChange("after"));
    await until(() => events.length >= 2, "two changes");
    await Bun.sleep(50);
    expect(events).toEqual(["change kept", "change after"]);
    await feed.close();
  });

  it("measures the database's clock against a skewed process clock", async () => {
    const feed = listenPostgres(suite.database.url, config(), {
      log,
      leaseMs: defaultLeaseMs,
      wallClock: () => Date.now() - 60_000,
    });
    await until(() => feed.live, "live");
    expect(Math.abs(feed.clock.offsetMs - 60_000)).toBeLessThan(1000);
    expect(feed.clock.uncertaintyMs).toBeGreaterThanOrEqual(0);
    await feed.close();
  });

  it("is lost the moment its connection is cut, and live again once the database is back", async () => {
    const feed = listenPostgres(suite.proxy.url, config(), { log, leaseMs: defaultLeaseMs, heartbeatMs: 10_000 });
    const events = recorded(feed);
    await until(() => feed.live, "live");
    suite.proxy.cut();
    await until(() => !feed.live, "lost", 1000); // no heartbeat needed: the close is seen at once
    expect(events).toEqual(["lost"]);
    suite.proxy.restore();
    await until(() => feed.live, "live again");
    await suite.database.handle.db.execute(announceChange("heard"));
    await until(() => events.includes("change heard"), "a change after the reconnect");
    await feed.close();
  });

  it("is lost within a heartbeat when its connection stalls without closing", async () => {
    const feed = listenPostgres(suite.proxy.url, config(), { log, leaseMs: defaultLeaseMs, heartbeatMs: 100 });
    await until(() => feed.live, "live");
    suite.proxy.stall();
    await until(() => !feed.live, "lost after a missed heartbeat", 3000);
    suite.proxy.restore();
    await until(() => feed.live, "live again");
    await feed.close();
  });

  it("is live only while a probe sent from another session comes back", async () => {
    // The probe goes to another database, whose notifications never reach this listener: the case of
    // a transaction pooler that accepts LISTEN and then delivers nothing.
    const elsewhere = await createTestDatabase({ migrate: false });
    const misrouted = listenPostgres(suite.database.url, config(), {
      log,
      leaseMs: defaultLeaseMs,
      probe: (payload) => elsewhere.handle.db.execute(announceChange(payload)),
    });
    const routed = listenPostgres(suite.database.url, config(), {
      log,
      leaseMs: defaultLeaseMs,
      probe: (payload) => suite.database.handle.db.execute(announceChange(payload)),
    });
    const events = recorded(routed);
    await until(() => routed.live, "the routed feed live");
    await Bun.sleep(1500); // past the probe's deadline (DATABASE_CONNECT_TIMEOUT_MS)
    expect(misrouted.live).toBe(false);
    expect(events).toEqual([]); // probes are never reported as changes
    await Promise.all([misrouted.close(), routed.close()]);
    await elsewhere.drop();
  });

  it("never goes live where nothing listens, and says lost to nobody (it never was live)", async () => {
    const feed = listenPostgres("postgres://postgres@127.0.0.1:1/none", config(), { log, leaseMs: defaultLeaseMs });
    const events = recorded(feed);
    await Bun.sleep(300);
    expect(feed.live).toBe(false);
    expect(events).toEqual([]);
    await feed.close();
  });
});

describe("the embedded database's feed", () => {
  it("delivers a change committed in the same process", async () => {
    const handle = await openPglite("memory://");
    const feed = await handle.listen({ log, leaseMs: defaultLeaseMs });
    const events = recorded(feed);
    expect(feed.live).toBe(true);
    await handle.db.transaction(async (tx) => {
      await tx.execute(announceChange("local"));
      await tx.execute(sql`select 1`);
    });
    await until(() => events.length > 0, "the change");
    expect(events).toEqual(["change local"]);
    await feed.close();
    await handle.close();
  });
});
