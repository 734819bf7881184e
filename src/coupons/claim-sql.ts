// The one place the service speaks the SQL of a claim. The decision itself is the database function
// claim_batch (drizzle/0001_claim_batch.sql): the coupon's advisory lock, then one set-based statement
// that decides a whole batch exactly as if its claims had been applied one by one in arrival order.
// One call is one round trip and its own transaction, so once it is sent there is nothing left to
// abort: the answer that comes back is committed.
import { sql } from "drizzle-orm";
import type { Database } from "../db/client";
import { pgErrorCode, UNIQUE_VIOLATION } from "../db/errors";
import { queryRows } from "../db/rows";
import type { DecidedOutcome } from "./outcomes";

export interface ClaimDecision {
  outcome: DecidedOutcome;
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
  outcome: DecidedOutcome;
  claimed_at: Date | string | null;
  remaining: number | null;
}

/**
 * Decides claims by `userIds` (arrival order, duplicates allowed) on one coupon, atomically. A unique
 * violation could only come from something that bypassed the lock; the batch is then decided one claim
 * per call, where the violation itself is the answer (already claimed).
 */
export async function decideClaims(db: Database, couponName: string, userIds: string[]): Promise<BatchResult> {
  try {
    const rows = await queryRows<DecisionRow>(
      db,
      sql`select outcome, claimed_at, remaining from claim_batch(${couponName}, ${sql.param(userIds)}::text[])`,
    );
    return {
      decisions: rows.map((row) => ({
        outcome: row.outcome,
        ...(row.claimed_at ? { claimedAt: new Date(row.claimed_at) } : {}),
      })),
      remaining: rows[0]?.remaining ?? null,
    };
  } catch (error) {
    if (pgErrorCode(error) !== UNIQUE_VIOLATION) throw error;
    if (userIds.length === 1) return { decisions: [{ outcome: "already_claimed" }], remaining: null };
    const decisions: ClaimDecision[] = [];
    let remaining: number | null = null;
    for (const userId of userIds) {
      const single = await decideClaims(db, couponName, [userId]);
      decisions.push(...single.decisions);
      remaining = single.remaining ?? remaining;
    }
    return { decisions, remaining };
  }
}

/** Every user holding a claim on `couponName`, or null when there are more than `limit`. */
export async function claimersUpTo(db: Database, couponName: string, limit: number): Promise<string[] | null> {
  const rows = await queryRows<{ user_id: string }>(
    db,
    sql`select user_id from claims where coupon_name = ${couponName} limit ${limit + 1}`,
  );
  return rows.length > limit ? null : rows.map((row) => row.user_id);
}
