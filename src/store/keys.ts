// Idempotency-Keys in the database (drizzle/0004_idempotency.sql does the rest): a create takes its key
// and stores its decision in the transaction that applies it, and each instance deletes expired keys.
// Claims and releases store theirs in their batch's own statement (claims.ts).
import { sql } from "drizzle-orm";
import type { IdempotencyKey } from "../domain/claim";
import { errorFields, type Logger } from "../log";
import { type Database, queryRows } from "./database";

/** A decision stored under a key, as a transaction that is not a claim batch (a create) reads it. */
export interface StoredDecision {
  fingerprint: string;
  /** Null: this transaction holds the key and decides it now. */
  outcome: string | null;
}

/**
 * Takes `key` inside transaction `tx` (waiting for another transaction that holds it) and returns what
 * is stored under it: null outcome when this transaction now holds it.
 */
export async function takeKey(tx: Database, key: IdempotencyKey): Promise<StoredDecision> {
  await tx.execute(sql`select idempotency_take(array[${key.key}]::text[], array[${key.fingerprint}]::text[],
    clock_timestamp(), ${key.ttlMs}::float8)`);
  // A statement of its own: it reads a new snapshot, which holds the row of a transaction waited for.
  const [row] = await queryRows<StoredDecision>(
    tx,
    sql`select fingerprint, outcome from idempotency_keys where key = ${key.key}`,
  );
  if (!row) throw new Error(`idempotency key ${JSON.stringify(key.key)} was neither taken nor found`);
  return row;
}

/** Stores `outcome` under a key this transaction took with takeKey. */
export async function keepDecision(tx: Database, key: IdempotencyKey, outcome: string): Promise<void> {
  await tx.execute(sql`update idempotency_keys set outcome = ${outcome}, decided_at = clock_timestamp()
    where key = ${key.key}`);
}

/**
 * Deletes expired keys every `intervalMs`, a thousand rows per statement, skipping rows another
 * transaction holds: it takes no coupon lock, so claims never wait for it (an expired key is already
 * ignored by every reader). Returns the stop function.
 */
export function startKeyCleanup(db: Database, options: { intervalMs: number; log: Logger }): () => void {
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const sweep = async () => {
    let deleted = 0;
    try {
      for (let batch = 1000; batch === 1000 && !stopped; ) {
        const rows = await queryRows<{ key: string }>(
          db,
          sql`delete from idempotency_keys where key in (
            select key from idempotency_keys where expires_at <= clock_timestamp()
            limit 1000 for update skip locked) returning key`,
        );
        batch = rows.length;
        deleted += batch;
      }
      if (deleted > 0) options.log.debug("expired idempotency keys deleted", { deleted });
    } catch (error) {
      options.log.warn("deleting expired idempotency keys failed; retrying later", errorFields(error));
    }
    if (!stopped) timer = setTimeout(sweep, options.intervalMs);
  };
  timer = setTimeout(sweep, options.intervalMs);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
