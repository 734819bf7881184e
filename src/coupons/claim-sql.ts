// The one place the service speaks the SQL of a claim. The decision itself is the database function
// claim_batch (drizzle/0001_claim_batch.sql): the coupon's advisory lock, then one set-based statement
// that decides a whole batch exactly as if its claims had been applied one by one in arrival order.
// A batch holding a release or an Idempotency-Key goes to claim_request_batch instead
// (drizzle/0004_idempotency.sql), which also stores each keyed decision in the same transaction.
// One call is one round trip and its own transaction, so once it is sent there is nothing left to
// abort: the answer that comes back is committed.
import { sql } from "drizzle-orm";
import type { Database } from "../db/client";
import { pgErrorCode, UNIQUE_VIOLATION } from "../db/errors";
import { queryRows } from "../db/rows";
import type { DecidedOutcome } from "./outcomes";

export interface ClaimDecision {
  outcome: DecidedOutcome;
  /** Set when outcome is "created" (the claim's instant) or "released" (the release's). */
  decidedAt?: Date;
  /** Set when outcome is "sale_not_started": milliseconds to the opening, by the database's clock. */
  opensInMs?: number;
  /** The coupon's stock right after this request (null when the coupon does not exist). */
  remaining: number | null;
  /** The decision stored under this request's Idempotency-Key by an earlier request, given again. */
  replayed?: true;
}

/** The Idempotency-Keys of a batch's requests (null where none), their fingerprints, and how long they live. */
export interface BatchKeys {
  keys: readonly (string | null)[];
  fingerprints: readonly (string | null)[];
  ttlMs: number;
}

export interface BatchResult {
  /** One decision per request, in the order given. */
  decisions: ClaimDecision[];
  /** The coupon's stock after the batch (as its last request not replayed left it); null when unknown. */
  remaining: number | null;
}

interface DecisionRow {
  outcome: DecidedOutcome;
  decided_at: Date | string | null;
  remaining: number | null;
  opens_in_ms: number | string | null;
  replayed?: boolean;
}

/**
 * The one call that decides a batch: set-based claim_batch, claim_keyed_batch (set-based too) with
 * keys, or claim_request_batch (one request at a time) with releases, or `oneByOne`.
 */
function batchCall(
  couponName: string,
  userIds: readonly string[],
  releases?: readonly boolean[],
  keys?: BatchKeys,
  oneByOne = false,
) {
  const users = sql.param(userIds);
  if (!releases?.includes(true)) {
    if (!keys)
      return sql`select outcome, claimed_at as decided_at, remaining, opens_in_ms
        from claim_batch(${couponName}, ${users}::text[])`;
    if (!oneByOne)
      return sql`select outcome, decided_at, remaining, opens_in_ms, replayed
        from claim_keyed_batch(${couponName}, ${users}::text[], ${sql.param(keys.keys)}::text[],
          ${sql.param(keys.fingerprints)}::text[], ${keys.ttlMs}::float8)`;
  }
  // As text: postgres.js sends a JS array of booleans as one boolean, which no cast turns into an array.
  const flags = sql.param(userIds.map((_, i) => (releases?.[i] ? "t" : "f")));
  const none = userIds.map(() => null);
  return sql`select outcome, decided_at, remaining, opens_in_ms, replayed
    from claim_request_batch(${couponName}, ${flags}::text[]::boolean[], ${users}::text[],
      ${sql.param(keys?.keys ?? none)}::text[], ${sql.param(keys?.fingerprints ?? none)}::text[],
      ${keys?.ttlMs ?? 0}::float8)`;
}

/**
 * Decides requests by `userIds` on one coupon (arrival order, the same user any number of times): a
 * claim each, or the release of that user's claim where `releases` says true; with `keys`, a request
 * whose key was used before gets that decision again (or idempotency_key_reused), and a new keyed
 * decision is stored in the same transaction. Atomic, and exactly as if applied one by one in that
 * order. A unique violation could only come from something that bypassed the lock; the batch is then
 * decided one request per call, where the violation itself is the answer (already claimed).
 */
export async function decideClaims(
  db: Database,
  couponName: string,
  userIds: readonly string[],
  releases?: readonly boolean[],
  keys?: BatchKeys,
  oneByOne = false,
): Promise<BatchResult> {
  // claim_keyed_batch takes every key once; a batch that repeats one is decided one request at a time.
  const given = keys?.keys.filter((key) => key !== null) ?? [];
  const repeats = new Set(given).size < given.length;
  try {
    const rows = await queryRows<DecisionRow>(db, batchCall(couponName, userIds, releases, keys, oneByOne || repeats));
    // claim_request_batch gives each row the stock after it; claim_batch the stock after the whole
    // batch. Claims only take stock, so counting the wins back from the end gives the same per row.
    const perRow = releases?.includes(true) === true || keys !== undefined;
    let after = (rows.at(-1)?.remaining ?? 0) + rows.filter((row) => row.outcome === "created").length;
    return {
      decisions: rows.map((row) => ({
        outcome: row.outcome,
        remaining: perRow || row.remaining === null ? row.remaining : row.outcome === "created" ? --after : after,
        ...(row.decided_at ? { decidedAt: new Date(row.decided_at) } : {}),
        // claim_batch gives every row of a batch on a sale not open yet the time to the opening, a
        // holder's too; only a sale_not_started answer can use it.
        ...(row.opens_in_ms !== null && row.outcome === "sale_not_started"
          ? { opensInMs: Number(row.opens_in_ms) }
          : {}),
        ...(row.replayed ? { replayed: true as const } : {}),
      })),
      // A replayed row holds the stock as it was then, not now; a refused key says nothing of it.
      remaining: rows.findLast((row) => !row.replayed && row.outcome !== "idempotency_key_reused")?.remaining ?? null,
    };
  } catch (error) {
    if (pgErrorCode(error) !== UNIQUE_VIOLATION) throw error;
    // claim_keyed_batch writes its keys after deciding: one another coupon's batch took meanwhile
    // undoes the batch. claim_request_batch takes the keys before deciding (waiting for such a
    // batch), so it gives that request its true answer.
    if (keys && !oneByOne) return decideClaims(db, couponName, userIds, releases, keys, true);
    if (userIds.length === 1) return { decisions: [{ outcome: "already_claimed", remaining: null }], remaining: null };
    const decisions: ClaimDecision[] = [];
    let remaining: number | null = null;
    for (const [i, userId] of userIds.entries()) {
      const one = keys && { ...keys, keys: [keys.keys[i] ?? null], fingerprints: [keys.fingerprints[i] ?? null] };
      const single = await decideClaims(db, couponName, [userId], releases && [releases[i] === true], one);
      decisions.push(...single.decisions);
      remaining = single.remaining ?? remaining;
    }
    return { decisions, remaining };
  }
}

/**
 * Takes `couponName`'s claim lock for the rest of the transaction: the same key claim_batch takes,
 * so a change made under it and the batches on that coupon are decided one after the other.
 */
export async function lockCoupon(tx: Database, couponName: string): Promise<void> {
  await tx.execute(sql`select pg_advisory_xact_lock(hashtextextended(${couponName}, 0))`);
}

/** A coupon's sale state and holders, read in one statement (so they agree), for answers.ts. */
export interface ClaimSnapshot {
  active: boolean;
  /** Epoch ms by the database's clock; null = no bound. */
  startsAt: number | null;
  endsAt: number | null;
  remaining: number;
  /** The database's clock when it was read. */
  now: number;
  /** Every holder, or null when there are more than the limit asked. */
  claimers: string[] | null;
}

interface SnapshotRow {
  active: boolean;
  starts_at: number | string | null;
  ends_at: number | string | null;
  remaining_amount: number;
  now: number | string;
  claimers: string[] | string | null;
}

const epochMs = (column: string) => sql.raw(`(extract(epoch from ${column}) * 1000)::float8`);
const ms = (value: number | string | null) => (value === null ? null : Number(value));

/** The snapshot of `couponName`, with up to `limit` holders; undefined when there is no such coupon. */
export async function claimSnapshot(
  db: Database,
  couponName: string,
  limit: number,
): Promise<ClaimSnapshot | undefined> {
  const [row] = await queryRows<SnapshotRow>(
    db,
    sql`select c.active, ${epochMs("c.starts_at")} as starts_at, ${epochMs("c.ends_at")} as ends_at,
      c.remaining_amount, ${epochMs("clock_timestamp()")} as now,
      (select coalesce(json_agg(s.user_id), '[]'::json)
        from (select user_id from claims where coupon_name = c.name limit ${limit + 1}) s) as claimers
    from coupons c where c.name = ${couponName}`,
  );
  if (!row) return undefined;
  // The drivers differ: json may come back parsed or as text.
  const claimers: string[] = typeof row.claimers === "string" ? JSON.parse(row.claimers) : (row.claimers ?? []);
  return {
    active: row.active,
    startsAt: ms(row.starts_at),
    endsAt: ms(row.ends_at),
    remaining: row.remaining_amount,
    now: Number(row.now),
    claimers: claimers.length > limit ? null : claimers,
  };
}
