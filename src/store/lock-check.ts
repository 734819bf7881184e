// The start-up self-test of the lock every claim relies on. Some engines that speak PostgreSQL's
// protocol shipped the advisory lock functions as stubs that return at once and report success
// (CockroachDB did for years, cockroach#13546): claim_batch_seq would then decide concurrent batches of
// one coupon side by side and oversell. So before serving, prove on the configured database that a
// transaction-scoped advisory lock held by one session makes another session's try fail, and that
// the try succeeds once it is released; and that hashtextextended, the lock key, exists.
import { sql } from "drizzle-orm";
import { type Database, queryRows } from "./database";
import { pgErrorCode } from "./errors";

/** Thrown when the database cannot be trusted with the claim lock: names the engine and the reason. */
export class LockCheckError extends Error {
  override name = "LockCheckError";
}

// A key of its own for each run of the self-test: off every coupon's lock and the migrations', and off
// the self-test of every other replica starting at the same moment (with one shared key, a replica
// probing the free lock found it held by its neighbour and refused a working engine).
const SELF_TEST_KEY = "coupon-service advisory lock self-test";
const UNDEFINED_FUNCTION = "42883";

/**
 * Proves on `db` that pg_advisory_xact_lock excludes: `other` (a second session on the same database)
 * must fail pg_try_advisory_xact_lock on the key while `db` holds it, and get it once `db` commits.
 */
export async function checkAdvisoryLock(db: Database, other: Database): Promise<void> {
  // The engine's version (named in every refusal) and the self-test's key, in one statement.
  const probe = sql`select version() as version, hashtextextended(${`${SELF_TEST_KEY} ${crypto.randomUUID()}`}, 0)::text as key`;
  // Without hashtextextended there is no row: the version is then asked alone, for the refusal.
  const [row] = await queryRows<{ version: string; key: string }>(db, probe).catch((error: unknown) => {
    if (pgErrorCode(error) === UNDEFINED_FUNCTION) return [];
    throw error;
  });
  const version =
    row?.version ?? (await queryRows<{ version: string }>(db, sql`select version() as version`))[0]?.version;
  const named = (reason: string) =>
    new LockCheckError(
      `refusing to start: ${reason}; claims would not be serialised per coupon and could oversell. Engine: ${version ?? "unknown"}`,
    );
  if (!row) throw named("the function hashtextextended(text, bigint) does not exist");
  const { key } = row;
  const tryLock = async () =>
    (await queryRows<{ taken: boolean }>(other, sql`select pg_try_advisory_xact_lock(${key}::bigint) as taken`))[0]
      ?.taken;
  const whileHeld = await db.transaction(async (tx) => {
    await tx.execute(sql`select pg_advisory_xact_lock(${key}::bigint)`);
    return tryLock();
  });
  if (whileHeld !== false)
    throw named("pg_try_advisory_xact_lock took a lock another session held (advisory locks do not exclude)");
  if ((await tryLock()) !== true)
    throw named("pg_try_advisory_xact_lock did not take a free lock (advisory locks do not work)");
}
