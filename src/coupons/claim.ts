// The one place that knows the SQL of a claim. A batch of claims on one coupon is decided in one
// transaction: take the coupon's advisory lock, then one set-based statement decides every claim
// exactly as if they had been applied one by one in arrival order.
import { sql } from "drizzle-orm";
import type { Database } from "../db/client";
import { queryRows } from "../db/rows";

export type ClaimOutcome = "created" | "already_claimed" | "sold_out" | "not_found";

export interface ClaimDecision {
  outcome: ClaimOutcome;
  /** Set when outcome is "created". */
  claimedAt?: Date;
}

export interface BatchResult {
  /** One decision per user id, in the order given. */
  decisions: ClaimDecision[];
  /** The coupon's stock after the batch; null when the coupon does not exist. */
  remaining: number | null;
}

interface DecisionRow {
  outcome: ClaimOutcome;
  claimed_at: Date | string | null;
  remaining: number | null;
}

/**
 * Decides claims by `userIds` (arrival order, duplicates allowed) on one coupon, atomically.
 * Rules, in order: unknown coupon -> not_found; user already holds it (before this batch, or through
 * an earlier copy in this batch) -> already_claimed; the first `remaining_amount` eligible users win;
 * everyone else -> sold_out.
 */
export async function decideClaims(
  db: Database,
  couponName: string,
  userIds: string[],
  signal?: AbortSignal,
): Promise<BatchResult> {
  return db.transaction(async (tx) => {
    // Serialises every batch on this coupon across all replicas; other coupons are not blocked.
    // hashtextextended gives a 64-bit key, so two coupon names practically never share a lock.
    // It is a separate statement because a statement's snapshot is taken before it runs: folded
    // into the statement below, the read would predate the lock and could miss the last batch.
    await tx.execute(sql`select pg_advisory_xact_lock(hashtextextended(${couponName}, 0))`);
    const rows = await queryRows<DecisionRow>(
      tx,
      sql`
      with req as (
        select r.user_id, r.ord::int as ord
        from unnest(${sql.param(userIds)}::text[]) with ordinality as r(user_id, ord)
      ),
      coupon as (select remaining_amount from coupons where name = ${couponName}),
      firsts as (select user_id, min(ord) as ord from req group by user_id),
      -- One probe of the (user_id, coupon_name) unique index per user. LIMIT keeps the planner from
      -- turning this into a hash join over every claim of the coupon, which grows with the sale.
      held as (
        select f.user_id from firsts f
        cross join lateral (
          select 1 from claims c where c.user_id = f.user_id and c.coupon_name = ${couponName} limit 1
        ) probe
      ),
      eligible as (
        select f.user_id, f.ord, row_number() over (order by f.ord) as rn
        from firsts f where f.user_id not in (select user_id from held)
      ),
      winners as (
        select e.user_id, e.ord from eligible e cross join coupon
        where e.rn <= coupon.remaining_amount
      ),
      inserted as (
        insert into claims (user_id, coupon_name)
        select user_id, ${couponName} from winners order by ord
        returning user_id, created_at
      ),
      updated as (
        update coupons set remaining_amount = remaining_amount - (select count(*) from inserted)::int
        where name = ${couponName} and exists (select 1 from inserted)
        returning remaining_amount
      )
      select
        case
          when not exists (select 1 from coupon) then 'not_found'
          when req.user_id in (select user_id from held) then 'already_claimed'
          when w.ord = req.ord then 'created'
          when w.ord is not null then 'already_claimed'
          else 'sold_out'
        end as outcome,
        i.created_at as claimed_at,
        coalesce((select remaining_amount from updated), (select remaining_amount from coupon)) as remaining
      from req
      left join winners w on w.user_id = req.user_id
      left join inserted i on i.user_id = req.user_id and w.ord = req.ord
      order by req.ord`,
    );
    // The claimers were already answered 503 (deadline passed while the connection stalled): roll
    // back rather than commit claims nobody was told about.
    signal?.throwIfAborted();
    return {
      decisions: rows.map((row) => ({
        outcome: row.outcome,
        ...(row.claimed_at ? { claimedAt: new Date(row.claimed_at) } : {}),
      })),
      remaining: rows[0]?.remaining ?? null,
    };
  });
}

/** Whether `userId` holds a claim on `couponName` (an indexed read; no lock). */
export async function holdsClaim(db: Database, couponName: string, userId: string): Promise<boolean> {
  const rows = await queryRows<{ held: boolean }>(
    db,
    sql`select exists(select 1 from claims where coupon_name = ${couponName} and user_id = ${userId}) as held`,
  );
  return rows[0]?.held === true;
}

/** Every user holding a claim on `couponName`, or null when there are more than `limit`. */
export async function claimersUpTo(db: Database, couponName: string, limit: number): Promise<Set<string> | null> {
  const rows = await queryRows<{ user_id: string }>(
    db,
    sql`select user_id from claims where coupon_name = ${couponName} limit ${limit + 1}`,
  );
  return rows.length > limit ? null : new Set(rows.map((row) => row.user_id));
}
