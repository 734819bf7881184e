// Applies the embedded migrations exactly once, even when several replicas start together.
import { createHash } from "node:crypto";
import { type SQL, sql } from "drizzle-orm";
import type { MigrationMeta } from "drizzle-orm/migrator";
import { type Database, queryRows } from "./database";
import { embeddedJournal, embeddedSql } from "./migrations";

// Arbitrary constant shared by every replica: whoever holds it migrates, the others wait and then
// find nothing left to do. Distinct from the per-coupon claim locks, which use hashtextextended keys.
const MIGRATION_LOCK_KEY = 7_340_293_001;

/** The embedded migrations in the shape drizzle's migrator reads from disk (same hashes). */
export function embeddedMigrations(): MigrationMeta[] {
  return embeddedJournal.entries.map((entry) => {
    const text = embeddedSql[entry.tag];
    if (text === undefined) throw new Error(`migration ${entry.tag} is in the journal but not embedded`);
    return {
      sql: text.split("--> statement-breakpoint"),
      bps: entry.breakpoints,
      folderMillis: entry.when,
      hash: createHash("sha256").update(text).digest("hex"),
    };
  });
}

/**
 * Runs pending migrations in one transaction that first takes a transaction-scoped advisory lock:
 * replicas starting together apply them once, and nothing outlives the transaction, so it is safe on
 * a pool, behind a transaction pooler (where a session lock and its unlock can land on different
 * server connections and the lock leaks), and on PGlite. `migrations`: all embedded ones, or the
 * first few, as an older release had them (tests).
 */
export async function runMigrations(db: Database, migrations = embeddedMigrations()): Promise<void> {
  // Already applied (every start but the first): one statement instead of the locked transaction. The
  // migrator would find nothing to apply either (it applies what is newer than the last recorded).
  if (await migrationsApplied(db).catch(() => false)) return;
  await db.transaction(async (tx) => {
    await tx.execute(sql`select pg_advisory_xact_lock(${MIGRATION_LOCK_KEY})`);
    // drizzle's own migrator, fed from memory instead of the drizzle/ folder; same bookkeeping table.
    // Its session is this transaction: the bookkeeping table is created and read under the lock (a
    // statement of its own, so these reads see what the previous holder committed), and the
    // migrator's own transaction is this one.
    const session = {
      execute: (query: SQL) => tx.execute(query),
      all: (query: SQL) => queryRows(tx, query),
      transaction: (body: (inner: typeof tx) => Promise<unknown>) => body(tx),
    };
    const { dialect } = tx as unknown as {
      dialect: { migrate(m: MigrationMeta[], session: unknown, config: object): Promise<void> };
    };
    await dialect.migrate(migrations, session, {});
  });
}

/** True when every embedded migration is recorded in the database (readiness). */
export async function migrationsApplied(db: Database): Promise<boolean> {
  const latest = embeddedJournal.entries.at(-1);
  if (!latest) return true;
  const [row] = await queryRows<{ applied: boolean }>(
    db,
    sql`select exists(select 1 from drizzle.__drizzle_migrations where created_at >= ${latest.when}) as applied`,
  );
  return row?.applied === true;
}
