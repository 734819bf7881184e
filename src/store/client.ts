// Opens the database the configuration names: a postgres.js pool for PostgreSQL, or an in-process
// PGlite when DATABASE_URL is unset. Both give the same Drizzle API (database.ts), so the store's
// functions are shared.
import { sql } from "drizzle-orm";
import { drizzle as drizzlePostgres } from "drizzle-orm/postgres-js";
import type { Config } from "../config";
import { CHANGES_CHANNEL, listenPostgres } from "./changes";
import { openClient, type PostgresOptions } from "./connect";
import { type Database, queryRows } from "./database";
import type { openEmbedded } from "./embedded";
import type { DatabaseHandle } from "./handle";
import { checkAdvisoryLock } from "./lock-check";
import { runMigrations } from "./migrate";
import * as schema from "./schema";

export type { DatabaseHandle } from "./handle";

/** Runs `work` over a client of one connection of its own at `url`, closed once it is done. */
async function withOneConnection<T>(
  url: string,
  config: PostgresOptions,
  work: (db: Database) => Promise<T>,
): Promise<T> {
  // Its statements send no array and read none: no catalog query for the array types on connecting.
  const { sql: client } = openClient(url, config, { max: 1, fetch_types: false });
  try {
    return await work(drizzlePostgres(client, { schema }) as unknown as Database);
  } finally {
    await client.end({ timeout: 5 });
  }
}

/**
 * Connects to PostgreSQL at `url` with a pool of DATABASE_POOL_MAX connections; the change feed
 * listens at `listenUrl` (LISTEN_DATABASE_URL) and migrations run at `migrationUrl`
 * (MIGRATION_DATABASE_URL), both by default the pool's server.
 */
export function openPostgres(
  url: string,
  config: PostgresOptions,
  listenUrl = url,
  migrationUrl?: string,
): DatabaseHandle {
  const { sql: client, timeouts } = openClient(url, config);
  const db = drizzlePostgres(client, { schema }) as unknown as Database;
  return {
    db,
    kind: "postgres",
    timeouts,
    // MIGRATION_DATABASE_URL: the primary itself, where the pool goes through a pooler.
    migrate: () => (migrationUrl ? withOneConnection(migrationUrl, config, runMigrations) : runMigrations(db)),
    // The second session: a connection of its own, so a pool of one (or a pooler) cannot queue it
    // behind the first session's transaction.
    checkLock: () => withOneConnection(url, config, (second) => checkAdvisoryLock(db, second)),
    listen: async (options) => {
      // The lease's probes on a connection of their own (another session than the listening one, as
      // the probe must be): never queued behind the pool's batches, so a busy pool cannot lapse it.
      const { sql: prober } = openClient(listenUrl, config, { max: 1, fetch_types: false });
      const feed = listenPostgres(listenUrl, config, {
        probe: (payload) => prober`select pg_notify(${CHANGES_CHANNEL}, ${payload})`,
        ...options,
      });
      const stopListening = feed.close;
      feed.close = async () => {
        await stopListening();
        await prober.end({ timeout: 0 }).catch(() => {});
      };
      return feed;
    },
    close: (timeoutMs = 5000) => client.end({ timeout: timeoutMs / 1000 }),
  };
}

/**
 * Opens (creating if needed) the embedded PGlite database in `dataDir` (embedded.ts, loaded only
 * then: PostgreSQL mode never evaluates PGlite's modules); `memory://` keeps it in RAM.
 */
export async function openPglite(...args: Parameters<typeof openEmbedded>): Promise<DatabaseHandle> {
  const { openEmbedded } = await import("./embedded");
  return openEmbedded(...args);
}

/** Opens whichever database the configuration asks for. */
export function openDatabase(config: Config): Promise<DatabaseHandle> | DatabaseHandle {
  return config.DATABASE_URL
    ? openPostgres(config.DATABASE_URL, config, config.LISTEN_DATABASE_URL, config.MIGRATION_DATABASE_URL)
    : openPglite(config.DATA_DIR);
}

/** What a trivial query finds: a database that answers and accepts writes, a read-only one (a standby), or none. */
export type DatabaseCheck = "ok" | "read-only" | "unreachable";

/** Answers whether the database responds to a trivial query, and whether it accepts writes. */
export async function ping(db: Database): Promise<DatabaseCheck> {
  try {
    // A parameter, as every statement outside a transaction carried while the pool pipelined; postgresOptions'
    // `max_pipeline: 0` now keeps every statement from following another, whatever its parameters.
    const rows = await queryRows<{ read_only: string }>(
      db,
      sql`select ${1}::int as ok, current_setting('transaction_read_only') as read_only`,
    );
    // On a hot standby, or a server made read-only, every transaction is read-only: no claim can commit.
    return rows[0]?.read_only === "on" ? "read-only" : "ok";
  } catch {
    return "unreachable";
  }
}
