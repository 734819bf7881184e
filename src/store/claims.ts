// The one place the service speaks the SQL of a claim. The decision itself is the database function
// claim_batch_seq (drizzle/0006_seq.sql): the coupon's advisory lock, then one set-based statement
// that decides a whole batch exactly as if its claims had been applied one by one in arrival order,
// and gives each winner its seq. A claim-only batch with Idempotency-Keys goes to
// claim_keyed_batch_seq, a batch holding a release to claim_request_batch_seq (both 0006 too), which
// also store each keyed decision and take down the release's fence in the same transaction. One call
// is one round trip and its own transaction, so once it is sent there is nothing left to abort: the
// answer that comes back is committed.
import { sql } from "drizzle-orm";
import { type ClaimRequest, type ClaimResult, plainResults } from "../domain/claim";
import type { DecidedOutcome } from "../domain/outcomes";
import { type Database, queryRows, textArray } from "./database";
import { pgErrorCode, UNIQUE_VIOLATION } from "./errors";

/** What the SQL of a batch reads of each claim request: who, a claim or a release, its key and its fence. */
export type BatchRequest = Pick<ClaimRequest, "user" | "release" | "idempotency" | "fence">;

/** One request's decision as the statement returns it. */
export interface ClaimDecision {
  outcome: DecidedOutcome;
  /** Set when outcome is "created" (the claim's instant) or "released" (the release's). */
  decidedAt?: Date;
  /** Set when outcome is "created": its place among the coupon's winning claims (a replay: the stored one). */
  seq?: number;
  /** Set when outcome is "sale_not_started": milliseconds to the opening, by the database's clock. */
  opensInMs?: number;
  /** The coupon's stock right after this request (null when the coupon does not exist). */
  remaining: number | null;
  /** The decision stored under this request's Idempotency-Key by an earlier request, given again. */
  replayed?: true;
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
  seq: number | null;
}

/**
 * The one call that decides a batch: set-based claim_batch_seq, claim_keyed_batch_seq (set-based too)
 * with keys, or claim_request_batch_seq (one request at a time) with releases, or `oneByOne`.
 */
function batchCall(couponName: string, requests: readonly BatchRequest[], oneByOne: boolean) {
  // Arrays as literals (textArray): the statement goes out in one round trip.
  const users = sql.param(textArray(requests.map((request) => request.user)));
  const keyed = requests.find((request) => request.idempotency)?.idempotency;
  const keys = sql.param(textArray(requests.map((request) => request.idempotency?.key ?? null)));
  const fingerprints = sql.param(textArray(requests.map((request) => request.idempotency?.fingerprint ?? null)));
  if (!requests.some((request) => request.release)) {
    if (!keyed)
      return sql`select outcome, claimed_at as decided_at, remaining, opens_in_ms, seq
        from claim_batch_seq(${couponName}, ${users}::text[])`;
    if (!oneByOne)
      return sql`select outcome, decided_at, remaining, opens_in_ms, replayed, seq
        from claim_keyed_batch_seq(${couponName}, ${users}::text[], ${keys}::text[], ${fingerprints}::text[],
          ${keyed.ttlMs}::float8)`;
  }
  // As text: a boolean[] literal is cast from text[] in the statement.
  const flags = sql.param(textArray(requests.map((request) => (request.release ? "t" : "f"))));
  const fences = sql.param(textArray(requests.map((request) => request.fence ?? null)));
  return sql`select outcome, decided_at, remaining, opens_in_ms, replayed, seq
    from claim_request_batch_seq(${couponName}, ${flags}::text[]::boolean[], ${users}::text[], ${keys}::text[],
      ${fingerprints}::text[], ${keyed?.ttlMs ?? 0}::float8, ${fences}::text[])`;
}

/** A decision as its request's result: what the claimer answers and the HTTP edge renders. */
function toResult(decision: ClaimDecision): ClaimResult {
  const replayed = decision.replayed ? { replayed: true as const } : {};
  switch (decision.outcome) {
    case "created":
      return {
        outcome: "created",
        decidedAt: decision.decidedAt as Date,
        remaining: decision.remaining,
        // A created decision always has its seq (claim_seq_at finds it for a key stored before 0006).
        seq: decision.seq as number,
        ...replayed,
      };
    case "released":
      // A release's coupon exists: the statement always gives its stock.
      return {
        outcome: "released",
        decidedAt: decision.decidedAt as Date,
        remaining: decision.remaining as number,
        ...replayed,
      };
    case "sale_not_started":
      // Whole seconds to the opening, at least 1: the answer's Retry-After.
      return {
        outcome: "sale_not_started",
        retryAfter: Math.max(1, Math.ceil((decision.opensInMs ?? 0) / 1000)),
        ...replayed,
      };
    default:
      return decision.replayed ? { outcome: decision.outcome, replayed: true } : plainResults[decision.outcome];
  }
}

/** The rows of one call as the batch's decisions. */
function toBatch(requests: readonly BatchRequest[], rows: DecisionRow[]): BatchResult {
  // claim_request_batch_seq and claim_keyed_batch_seq give each row the stock after it; claim_batch_seq
  // the stock after the whole batch. Claims only take stock, so counting the wins back from the end
  // gives the same per row.
  const perRow = requests.some((request) => request.release || request.idempotency);
  let after = (rows.at(-1)?.remaining ?? 0) + rows.filter((row) => row.outcome === "created").length;
  return {
    decisions: rows.map((row) => ({
      outcome: row.outcome,
      remaining: perRow || row.remaining === null ? row.remaining : row.outcome === "created" ? --after : after,
      ...(row.decided_at ? { decidedAt: new Date(row.decided_at) } : {}),
      ...(row.seq !== null ? { seq: row.seq } : {}),
      // claim_batch_seq gives every row of a batch on a sale not open yet the time to the opening, a
      // holder's too; only a sale_not_started answer can use it.
      ...(row.opens_in_ms !== null && row.outcome === "sale_not_started" ? { opensInMs: Number(row.opens_in_ms) } : {}),
      ...(row.replayed ? { replayed: true as const } : {}),
    })),
    // A replayed row holds the stock as it was then, not now; a refused key or release says nothing of it.
    remaining:
      rows.findLast((row) => !row.replayed && row.outcome !== "idempotency_key_reused" && row.outcome !== "expired")
        ?.remaining ?? null,
  };
}

/**
 * The batch decided by one call, set-based first; a keyed batch whose set-based call met a unique
 * violation (or that repeats a key) one request at a time. Undefined when the last call met a unique
 * violation too.
 */
async function attempt(
  db: Database,
  couponName: string,
  requests: readonly BatchRequest[],
): Promise<BatchResult | undefined> {
  const given = requests.flatMap((request) => (request.idempotency ? [request.idempotency.key] : []));
  // claim_keyed_batch_seq takes every key once; a batch that repeats one is decided one request at a time.
  const repeats = new Set(given).size < given.length;
  // claim_keyed_batch_seq writes its keys after deciding: one another coupon's batch took meanwhile
  // undoes the batch. claim_request_batch_seq takes the keys before deciding (waiting for such a
  // batch), so it gives that request its true answer.
  const calls = given.length > 0 && !repeats ? [false, true] : [repeats];
  for (const oneByOne of calls) {
    try {
      return toBatch(requests, await queryRows<DecisionRow>(db, batchCall(couponName, requests, oneByOne)));
    } catch (error) {
      if (pgErrorCode(error) !== UNIQUE_VIOLATION) throw error;
    }
  }
  return undefined;
}

const alreadyClaimed: BatchResult = { decisions: [{ outcome: "already_claimed", remaining: null }], remaining: null };

/**
 * Decides `requests` on one coupon (arrival order, the same user any number of times): a claim each,
 * or a release; a keyed request whose key was used before gets that decision again (or
 * idempotency_key_reused), and a new keyed decision is stored in the same transaction. Atomic, and
 * exactly as if applied one by one in that order. A unique violation could only come from something
 * that bypassed the lock; the batch is then decided one request per call, where the violation itself
 * is the answer (already claimed).
 */
export async function decideBatch(
  db: Database,
  couponName: string,
  requests: readonly BatchRequest[],
): Promise<BatchResult> {
  const batch = await attempt(db, couponName, requests);
  if (batch) return batch;
  if (requests.length === 1) return alreadyClaimed;
  const decisions: ClaimDecision[] = [];
  let remaining: number | null = null;
  for (const request of requests) {
    const single = (await attempt(db, couponName, [request])) ?? alreadyClaimed;
    decisions.push(...single.decisions);
    remaining = single.remaining ?? remaining;
  }
  return { decisions, remaining };
}

/** decideBatch's decisions as the requests' results, in order: what the group commit answers. */
export async function decideClaims(
  db: Database,
  couponName: string,
  requests: readonly BatchRequest[],
): Promise<ClaimResult[]> {
  return (await decideBatch(db, couponName, requests)).decisions.map(toResult);
}

/**
 * Takes `couponName`'s claim lock for the rest of the transaction: the same key the batch functions take,
 * so a change made under it and the batches on that coupon are decided one after the other.
 */
export async function lockCoupon(tx: Database, couponName: string): Promise<void> {
  await tx.execute(sql`select pg_advisory_xact_lock(hashtextextended(${couponName}, 0))`);
}

/**
 * What a replica may learn of a coupon for answers from memory (engine/answers.ts), read in one statement so
 * it agrees: its sale's state, stock and holders; or only that a change of it is announced and not
 * yet made (its fence stands), when there is nothing to learn.
 */
export type ClaimSnapshot =
  | { fenced: true }
  | {
      fenced: false;
      active: boolean;
      /** Epoch ms by the database's clock; null = no bound. */
      startsAt: number | null;
      endsAt: number | null;
      remaining: number;
      /** The database's clock when it was read. */
      now: number;
      /** Every holder; null when there are more than the limit asked, or when a claim can win (not read). */
      claimers: string[] | null;
    };

interface SnapshotRow {
  fenced: boolean;
  active: boolean;
  starts_at: number | string | null;
  ends_at: number | string | null;
  remaining_amount: number;
  now: number | string;
  claimers: string[] | string | null;
}

const ms = (value: number | string | null) => (value === null ? null : Number(value));

/** The snapshot of `couponName`, with up to `limit` holders (coupon_snapshot); undefined when there is no such coupon. */
export async function claimSnapshot(
  db: Database,
  couponName: string,
  limit: number,
): Promise<ClaimSnapshot | undefined> {
  const [row] = await queryRows<SnapshotRow>(
    db,
    sql`select fenced, active, starts_at, ends_at, remaining_amount, now, claimers
      from coupon_snapshot(${couponName}, ${limit}::int)`,
  );
  if (!row) return undefined;
  if (row.fenced) return { fenced: true };
  // The drivers differ: json may come back parsed or as text.
  const claimers: string[] | null = typeof row.claimers === "string" ? JSON.parse(row.claimers) : row.claimers;
  return {
    fenced: false,
    active: row.active,
    startsAt: ms(row.starts_at),
    endsAt: ms(row.ends_at),
    remaining: row.remaining_amount,
    now: Number(row.now),
    claimers: claimers && claimers.length <= limit ? claimers : null,
  };
}
