// Idempotency-Key on create, claim and release (the IETF httpapi draft, as Stripe behaves): the first
// request with a key is executed and its decision stored in the transaction that applied it; the same
// key with the same request gets that decision again, rendered as the same answer, from any replica.
// What the database does is in drizzle/0004_idempotency.sql; this file parses the header, pins the
// request with a fingerprint, makes requests with one key wait their turn in this process, and
// deletes expired keys.
import { createHash } from "node:crypto";
import { sql } from "drizzle-orm";
import type { Database } from "../db/client";
import { queryRows } from "../db/rows";
import { AppError } from "../errors";
import { errorFields, type Logger } from "../log";

/** A request's key and what it must be the same request as, with how long the key lives. */
export interface IdempotencyKey {
  key: string;
  /** SHA-256 of the route and the request's fields. */
  fingerprint: string;
  ttlMs: number;
}

export const IDEMPOTENCY_HEADER = "idempotency-key";
const PRINTABLE = /^[\x20-\x7e]{1,255}$/;
const KEY_RULE =
  "Idempotency-Key: must be 1..255 printable ASCII characters (a quoted string counts without its quotes)";

/**
 * The key of a request, or undefined without the header. The draft sends it as a structured-field
 * string ("..."), Stripe's clients bare: both are taken, the quotes and escapes removed.
 */
export function idempotencyKey(header: string | null | undefined): string | undefined {
  if (header === null || header === undefined) return undefined;
  let key = header;
  if (key.length >= 2 && key.startsWith('"') && key.endsWith('"')) {
    const inner = key.slice(1, -1);
    // Only \" and \\ may be escaped, and a quote must be.
    if (!/^(?:[^"\\]|\\["\\])*$/.test(inner)) throw new AppError("VALIDATION_FAILED", KEY_RULE);
    key = inner.replace(/\\(["\\])/g, "$1");
  }
  if (!PRINTABLE.test(key) || key.trim() === "") throw new AppError("VALIDATION_FAILED", KEY_RULE);
  return key;
}

/** The fingerprint of a request: its route and its fields, in a fixed order. */
export function fingerprint(route: string, fields: readonly unknown[]): string {
  return createHash("sha256")
    .update(JSON.stringify([route, ...fields]))
    .digest("base64url");
}

/** The key of a request with `header`, pinned to `route` and `fields`; undefined without the header. */
export function keyOf(
  header: string | null | undefined,
  route: string,
  fields: readonly unknown[],
  ttlMs: number,
): IdempotencyKey | undefined {
  const key = idempotencyKey(header);
  return key === undefined ? undefined : { key, fingerprint: fingerprint(route, fields), ttlMs };
}

/**
 * One request per key at a time in this process. A second one waits for the first to be answered,
 * then runs (and the database answers it with the stored decision, or executes it if none was
 * stored). Two cases answer "in_use" instead: its deadline passes while it waits; or the first ended
 * `unsettled` (no answer by its deadline: its transaction may still be running, so the key is still
 * in use there, and a retry shortly gets its answer). Across replicas the database makes the same
 * wait, on the key's row (drizzle/0004_idempotency.sql).
 */
export function createKeyTurns() {
  const held = new Map<string, Promise<boolean>>();
  return {
    async take<T>(
      key: string,
      deadline: number,
      run: () => Promise<T>,
      unsettled: (result: T) => boolean,
    ): Promise<T | "in_use"> {
      for (let turn = held.get(key); turn; turn = held.get(key)) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const late = new Promise<"late">((resolve) => {
          timer = setTimeout(() => resolve("late"), Math.max(0, deadline - performance.now()));
        });
        const waited = await Promise.race([turn, late]);
        clearTimeout(timer);
        if (waited === "late" || waited === true) return "in_use";
      }
      let done = (_unsettled: boolean) => {};
      held.set(
        key,
        new Promise<boolean>((resolve) => {
          done = resolve;
        }),
      );
      let open = true; // a run that throws leaves the key unsettled too
      try {
        const result = await run();
        open = unsettled(result);
        return result;
      } finally {
        held.delete(key);
        done(open);
      }
    },
    get size() {
      return held.size;
    },
  };
}

export type KeyTurns = ReturnType<typeof createKeyTurns>;

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
