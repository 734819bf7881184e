// Creating, listing and changing coupons. Reading one with its claimers is read.ts.
import { asc, eq, gt } from "drizzle-orm";
import type { CreateResult, IdempotencyKey } from "../domain/claim";
import { type Coupon, type CouponPage, couponSummary, type SaleChange, type Schedule } from "../domain/coupon";
import { AppError, couponNotFound, fail, failures } from "../domain/errors";
import { announceChange } from "./changes";
import { lockCoupon } from "./claims";
import type { Database } from "./database";
import { CHECK_VIOLATION, pgErrorCode } from "./errors";
import { lowerFence } from "./fences";
import { keepDecision, takeKey } from "./keys";
import { coupons } from "./schema";

const summaryColumns = {
  name: coupons.name,
  amount: coupons.amount,
  remaining_amount: coupons.remainingAmount,
  starts_at: coupons.startsAt,
  ends_at: coupons.endsAt,
  active: coupons.active,
};

// What a create's key stores: its outcome, as the first version of this service wrote it.
const stored = { created: "created", coupon_exists: "exists" } as const;

/**
 * Creates a coupon with its full stock, or answers coupon_exists when the name is taken. A scheduled one is
 * announced on the change feed, so every replica learns at once that claims on it cannot win yet.
 * With a key, the decision is stored in the same transaction, and a request whose key was used before
 * gets that decision again (the coupon as created, whatever happened to it since) or
 * idempotency_key_reused.
 */
export async function createCoupon(
  db: Database,
  name: string,
  amount: number,
  schedule: Schedule = {},
  key?: IdempotencyKey,
): Promise<CreateResult> {
  const scheduled = schedule.startsAt !== undefined || schedule.endsAt !== undefined;
  const insert = async (tx: Database): Promise<CreateResult> => {
    const [created] = await tx
      .insert(coupons)
      .values({ name, amount, remainingAmount: amount, ...schedule })
      .onConflictDoNothing({ target: coupons.name })
      .returning(summaryColumns);
    if (created && scheduled) await tx.execute(announceChange(name));
    return created ? { outcome: "created", coupon: couponSummary(created) } : { outcome: "coupon_exists" };
  };
  if (!key && !scheduled) return insert(db);
  return db.transaction(async (transaction) => {
    const tx = transaction as unknown as Database;
    if (!key) return insert(tx);
    const taken = await takeKey(tx, key);
    if (taken.fingerprint !== key.fingerprint) return { outcome: "idempotency_key_reused" };
    if (taken.outcome === stored.coupon_exists) return { outcome: "coupon_exists", replayed: true };
    if (taken.outcome === stored.created) {
      // The request is pinned by the fingerprint, so it says what was created.
      const sale = { starts_at: schedule.startsAt ?? null, ends_at: schedule.endsAt ?? null, active: true };
      return {
        outcome: "created",
        coupon: couponSummary({ name, amount, remaining_amount: amount, ...sale }),
        replayed: true,
      };
    }
    const result = await insert(tx);
    await keepDecision(tx, key, stored[result.outcome as keyof typeof stored]);
    return result;
  });
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
 * on the old rules after this commits) and announced on the change feed in the same transaction. The
 * change was fenced (fences.ts) with `fence`, taken down here; a fence that expired meanwhile refuses it.
 */
export async function updateCoupon(db: Database, name: string, change: SaleChange, fence: string): Promise<Coupon> {
  try {
    return await db.transaction(async (transaction) => {
      const tx = transaction as unknown as Database;
      await lockCoupon(tx, name);
      if (!(await lowerFence(tx, fence))) throw fail(failures.tooLateForFence);
      const [row] = await tx.update(coupons).set(change).where(eq(coupons.name, name)).returning(summaryColumns);
      if (!row) throw couponNotFound(name);
      await tx.execute(announceChange(name));
      return couponSummary(row);
    });
  } catch (error) {
    if (pgErrorCode(error) !== CHECK_VIOLATION) throw error;
    throw new AppError("VALIDATION_FAILED", "ends_at: must be after starts_at (as the coupon would have them)");
  }
}
