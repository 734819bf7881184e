// Reading one user's claim on one coupon (GET /api/coupons/{name}/claims/{user_id}): one statement of
// index probes, so it costs the same on a coupon of ten claims and on one of ten million.
import { sql } from "drizzle-orm";
import { couponNotFound } from "../domain/errors";
import { type Database, queryRows } from "./database";
import { withDeadline } from "./deadline";

/** What a user has of a coupon: the claim held, else when their last claim was released, else nothing. */
export type ClaimRead =
  /** Held: when it was claimed, and its seq (its place among the coupon's winning claims, 1 for the first). */
  | { status: "held"; claimedAt: Date; seq: number }
  /** Held no longer: the instant of the user's most recent release on this coupon. */
  | { status: "released"; releasedAt: Date }
  /** Never claimed. */
  | { status: "none" };

interface ClaimRow {
  claimed_at: Date | string | null;
  seq: number | null;
  released_at: Date | string | null;
}

/**
 * `user`'s claim on `coupon`, read in one statement: a probe of the unique (user_id, coupon_name) index
 * of claims and, only when nothing is held, one of claim_releases' (coupon_name, user_id, id) index for
 * the latest release (releases are numbered in commit order under the coupon's lock). Throws
 * COUPON_NOT_FOUND when there is no such coupon, and a 503 once `deadline` (performance.now() ms) passes.
 */
export async function readClaim(db: Database, coupon: string, user: string, deadline: number): Promise<ClaimRead> {
  const [row] = await withDeadline(
    queryRows<ClaimRow>(
      db,
      sql`select h.created_at as claimed_at, h.seq,
        case when h.seq is null then (
          select r.released_at from claim_releases r
          where r.coupon_name = ${coupon} and r.user_id = ${user} order by r.id desc limit 1)
        end as released_at
      from coupons c left join claims h on h.user_id = ${user} and h.coupon_name = ${coupon}
      where c.name = ${coupon}`,
    ),
    Math.max(0, deadline - performance.now()),
  );
  if (!row) throw couponNotFound(coupon);
  // The drivers differ: a timestamp may come back as a Date or as text.
  if (row.seq !== null) return { status: "held", claimedAt: new Date(row.claimed_at as Date | string), seq: row.seq };
  if (row.released_at !== null) return { status: "released", releasedAt: new Date(row.released_at) };
  return { status: "none" };
}
