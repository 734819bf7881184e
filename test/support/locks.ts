// A lock held by another session for as long as a test needs: a transaction of its own that takes a
// PostgreSQL advisory lock, and keeps it until the test lets go.
import type postgres from "postgres";

/** A transaction on `sql` holding advisory lock `key` (a bigint, or text hashed as claim_batch hashes a coupon's name). */
export async function holdAdvisoryLock(sql: postgres.Sql, key: number | string): Promise<{ release(): Promise<void> }> {
  let letGo = () => {};
  const released = new Promise<void>((resolve) => {
    letGo = resolve;
  });
  let holding = () => {};
  const held = new Promise<void>((resolve) => {
    holding = resolve;
  });
  const holder = sql.begin(async (tx) => {
    if (typeof key === "number") await tx`select pg_advisory_xact_lock(${key}::bigint)`;
    else await tx`select pg_advisory_xact_lock(hashtextextended(${key}, 0))`;
    holding();
    await released;
  });
  await Promise.race([held, holder]);
  return {
    async release() {
      letGo();
      await holder;
    },
  };
}
