// Creating, listing and changing coupons. Reading one with its claimers is read.ts.
import { asc, eq, gt } from "drizzle-orm";
import { announceChange } from "../db/changes";
import type { Database } from "../db/client";
import { CHECK_VIOLATION, pgErrorCode } from "../db/errors";
import { coupons } from "../db/schema";
import { AppError } from "../errors";
import { lockCoupon } from "./claim-sql";
import type { CouponCreated, CouponPage, CouponSummary } from "./model";
import { couponSummary, type SaleChange } from "./schedule";

const summaryColumns = {
  name: coupons.name,
  amount: coupons.amount,
  remaining_amount: coupons.remainingAmount,
  starts_at: coupons.startsAt,
  ends_at: coupons.endsAt,
  active: coupons.active,
};

/**
 * Creates a coupon with its full stock; COUPON_EXISTS when the name is taken. A scheduled one is
 * announced on the change feed, so every replica learns at once that claims on it cannot win yet.
 */
export async function createCoupon(
  db: Database,
  name: string,
  amount: number,
  schedule: { startsAt?: Date; endsAt?: Date } = {},
): Promise<CouponCreated> {
  const insert = (tx: Database) =>
    tx
      .insert(coupons)
      .values({ name, amount, remainingAmount: amount, ...schedule })
      .onConflictDoNothing({ target: coupons.name })
      .returning(summaryColumns);
  const scheduled = schedule.startsAt !== undefined || schedule.endsAt !== undefined;
  const rows = scheduled
    ? await db.transaction(async (tx) => {
        const inserted = await insert(tx as unknown as Database);
        if (inserted[0]) await tx.execute(announceChange(name));
        return inserted;
      })
    : await insert(db);
  const created = rows[0];
  if (!created) throw new AppError("COUPON_EXISTS", `A coupon named ${JSON.stringify(name)} already exists.`);
  return couponSummary(created);
}

/** One page of coupons in name order, after the name `after`; next_after names the last one when more follow. */
export async function listCoupons(db: Database, limit: number, after?: string): Promise<CouponPage> {
  const rows = await db
    .select(summaryColumns)
    .from(coupons)
    .where(after === undefined ? undefined : gt(coupons.name, after))
    .orderBy(asc(coupons.name))
    .limit(limit + 1);
  const page = rows.slice(0, limit);
  return { coupons: page.map(couponSummary), next_after: rows.length > limit ? (page.at(-1)?.name ?? null) : null };
}

/**
 * Changes a sale's schedule or pauses/resumes it, under the coupon's claim lock (so no batch decides
 * on the old rules after this commits) and announced on the change feed in the same transaction.
 */
export async function updateCoupon(db: Database, name: string, change: SaleChange): Promise<CouponSummary> {
  try {
    return await db.transaction(async (tx) => {
      await lockCoupon(tx as unknown as Database, name);
      const [row] = await tx.update(coupons).set(change).where(eq(coupons.name, name)).returning(summaryColumns);
      if (!row) throw new AppError("COUPON_NOT_FOUND", `No coupon named ${JSON.stringify(name)}.`);
      await tx.execute(announceChange(name));
      return couponSummary(row);
    });
  } catch (error) {
    if (pgErrorCode(error) !== CHECK_VIOLATION) throw error;
    throw new AppError("VALIDATION_FAILED", "ends_at: must be after starts_at (as the coupon would have them)");
  }
}
