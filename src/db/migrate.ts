// Applies the embedded migrations exactly once, even when several replicas start together.
import { createHash } from "node:crypto";
import { sql } from "drizzle-orm";
import type { MigrationMeta } from "drizzle-orm/migrator";
import type { Database } from "./client";
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

/** Runs pending migrations on `db`, which must be a single connection, holding a session advisory lock. */
export async function runMigrations(db: Database): Promise<void> {
  await db.execute(sql`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`);
  try {
    // drizzle's own migrator, fed from memory instead of the drizzle/ folder; same bookkeeping table.
    const internals = db as unknown as {
      dialect: { migrate(m: MigrationMeta[], session: unknown, config: object): Promise<void> };
      session: unknown;
    };
    await internals.dialect.migrate(embeddedMigrations(), internals.session, {});
  } finally {
    await db.execute(sql`select pg_advisory_unlock(${MIGRATION_LOCK_KEY})`);
  }
}

/** True when every embedded migration is recorded in the database (readiness). */
export async function migrationsApplied(db: Database): Promise<boolean> {
  const latest = embeddedJournal.entries.at(-1);
  if (!latest) return true;
  const rows = await db.execute<{ applied: boolean }>(
    sql`select exists(select 1 from drizzle.__drizzle_migrations where created_at >= ${latest.when}) as applied`,
  );
  const list = Array.isArray(rows) ? rows : (rows as unknown as { rows: { applied: boolean }[] }).rows;
  return list[0]?.applied === true;
}
