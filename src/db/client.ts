// Opens the database the configuration names: a postgres.js pool for PostgreSQL, or an in-process
// PGlite when DATABASE_URL is unset. Both give the same Drizzle API, so the domain code is shared.
import { PGlite } from "@electric-sql/pglite";
import { sql } from "drizzle-orm";
import type { PgDatabase, PgQueryResultHKT } from "drizzle-orm/pg-core";
import { drizzle as drizzlePglite } from "drizzle-orm/pglite";
import { drizzle as drizzlePostgres } from "drizzle-orm/postgres-js";
import postgres from "postgres";
import type { Config } from "../config";
import { announceChange, type ChangeFeed, type FeedOptions, listenPglite, listenPostgres } from "./changes";
import { checkAdvisoryLock } from "./lock-check";
import { runMigrations } from "./migrate";
import { lockDataDir, pgliteAssets } from "./pglite";
import * as schema from "./schema";

export type Database = PgDatabase<PgQueryResultHKT, typeof schema>;

export interface DatabaseHandle {
  db: Database;
  kind: "postgres" | "pglite";
  /** Runs the embedded migrations in one transaction under a transaction-scoped advisory lock. */
  migrate(): Promise<void>;
  /**
   * Proves the claim lock excludes on this database (db/lock-check.ts), or throws LockCheckError;
   * PGlite is one session in this process, where there is nothing to prove.
   */
  checkLock(): Promise<void>;
  /** Starts listening for coupon changes on a connection of its own (db/changes.ts). */
  listen(options: FeedOptions): Promise<ChangeFeed>;
  /** Closes the connections, waiting at most `timeoutMs` for queries still running (default 5 s). */
  close(timeoutMs?: number): Promise<void>;
}

export type PostgresOptions = Pick<
  Config,
  "DATABASE_POOL_MAX" | "DATABASE_CONNECT_TIMEOUT_MS" | "DATABASE_STATEMENT_TIMEOUT_MS"
>;

/** postgres.js options for the pool; safe behind a transaction pooler such as PgBouncer. */
export function postgresOptions(config: PostgresOptions): postgres.Options<Record<string, postgres.PostgresType>> {
  return {
    max: config.DATABASE_POOL_MAX,
    connect_timeout: config.DATABASE_CONNECT_TIMEOUT_MS / 1000,
    idle_timeout: 60,
    // The default backoff grows to 20 s between reconnects; a flash sale cannot wait that long.
    backoff: (attempt) => Math.min(0.05 * 2 ** attempt, 1),
    // No named prepared statements. Behind a transaction pooler the next transaction may run on a server
    // connection that never saw this connection's statements; the driver then retries its own `commit`
    // inside the aborted transaction, where PostgreSQL answers it with a rollback that the driver reports
    // as success: acknowledged claims that do not exist. Drizzle's queries are unnamed anyway; this makes
    // the driver's commit, rollback and savepoint unnamed too, in the same single round trip.
    prepare: false,
    // Applied at connect on a direct connection. A pooler refuses these or drops them
    // (ignore_startup_parameters): set them on the database role there (README, "Behind PgBouncer").
    connection: {
      application_name: "coupon-service",
      statement_timeout: config.DATABASE_STATEMENT_TIMEOUT_MS,
      lock_timeout: config.DATABASE_STATEMENT_TIMEOUT_MS,
      idle_in_transaction_session_timeout: config.DATABASE_STATEMENT_TIMEOUT_MS * 2,
    },
    onnotice: () => {},
  };
}

/** Runs `work` over a client of one connection of its own at `url`, closed once it is done. */
async function withOneConnection<T>(
  url: string,
  config: PostgresOptions,
  work: (db: Database) => Promise<T>,
): Promise<T> {
  const client = postgres(url, { ...postgresOptions(config), max: 1 });
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
  const client = postgres(url, postgresOptions(config));
  const db = drizzlePostgres(client, { schema }) as unknown as Database;
  return {
    db,
    kind: "postgres",
    // MIGRATION_DATABASE_URL: the primary itself, where the pool goes through a pooler.
    migrate: () => (migrationUrl ? withOneConnection(migrationUrl, config, runMigrations) : runMigrations(db)),
    // The second session: a connection of its own, so a pool of one (or a pooler) cannot queue it
    // behind the first session's transaction.
    checkLock: () => withOneConnection(url, config, (second) => checkAdvisoryLock(db, second)),
    listen: async (options) =>
      listenPostgres(listenUrl, config, { probe: (payload) => db.execute(announceChange(payload)), ...options }),
    close: (timeoutMs = 5000) => client.end({ timeout: timeoutMs / 1000 }),
  };
}

/** Opens (creating if needed) the embedded PGlite database in `dataDir`; `memory://` keeps it in RAM. */
export async function openPglite(dataDir: string): Promise<DatabaseHandle> {
  const unlock = dataDir.startsWith("memory://") ? () => {} : lockDataDir(dataDir);
  try {
    const client = await PGlite.create({ dataDir, ...(await pgliteAssets()) });
    const db = drizzlePglite(client, { schema }) as unknown as Database;
    const close = async () => {
      await client.close();
      unlock();
    };
    const listen = (options: FeedOptions) => listenPglite(client, options);
    return { db, kind: "pglite", migrate: () => runMigrations(db), checkLock: async () => {}, listen, close };
  } catch (error) {
    unlock();
    throw error;
  }
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
    // A parameter on purpose: postgres.js pipelines the next query behind a parameterless one, and
    // PgBouncer, which counts Syncs, returns the server connection to its pool at this answer while that
    // query's Parse/Describe (no Sync yet) is still on it: it never gets an answer. Nothing is pipelined
    // behind a query with parameters (sent as Parse/Describe first), so keep every statement outside a
    // transaction parameterised.
    const result = await db.execute<{ read_only: string }>(
      sql`select ${1}::int as ok, current_setting('transaction_read_only') as read_only`,
    );
    const rows = Array.isArray(result) ? result : (result as unknown as { rows: { read_only: string }[] }).rows;
    // On a hot standby, or a server made read-only, every transaction is read-only: no claim can commit.
    return rows[0]?.read_only === "on" ? "read-only" : "ok";
  } catch {
    return "unreachable";
  }
}
