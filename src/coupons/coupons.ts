// Creating and reading coupons.
import { eq, sql } from "drizzle-orm";
import type { Database } from "../db/client";
import { coupons } from "../db/schema";
import { AppError } from "../errors";
import type { CouponCreated, CouponDetails } from "./model";

/** Creates a coupon with its full stock; COUPON_EXISTS when the name is taken. */
export async function createCoupon(db: Database, name: string, amount: number): Promise<CouponCreated> {
  const rows = await db
    .insert(coupons)
    .values({ name, amount, remainingAmount: amount })
    .onConflictDoNothing({ target: coupons.name })
    .returning({ name: coupons.name, amount: coupons.amount, remaining_amount: coupons.remainingAmount });
  const created = rows[0];
  if (!created) throw new AppError("COUPON_EXISTS", `A coupon named ${JSON.stringify(name)} already exists.`);
  return created;
}

/** Reads a coupon and its claimers in claim order, in one statement so stock and claimers agree. */
export async function getCoupon(db: Database, name: string): Promise<CouponDetails> {
  const rows = await db
    .select({
      name: coupons.name,
      amount: coupons.amount,
      remaining_amount: coupons.remainingAmount,
      claimed_by: sql<string[]>`(
        select coalesce(json_agg(c.user_id order by c.id), '[]'::json)
        from claims c where c.coupon_name = ${coupons.name})`,
    })
    .from(coupons)
    .where(eq(coupons.name, name));
  const coupon = rows[0];
  if (!coupon) throw new AppError("COUPON_NOT_FOUND", `No coupon named ${JSON.stringify(name)}.`);
  // postgres.js parses json; other drivers may hand back the text.
  if (typeof coupon.claimed_by === "string") coupon.claimed_by = JSON.parse(coupon.claimed_by);
  return coupon;
}
