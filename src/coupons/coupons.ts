// Creating, listing and changing coupons. Reading one with its claimers is read.ts.
import { asc, eq, gt } from "drizzle-orm";
import { announceChange } from "../db/changes";
import type { Database } from "../db/client";
import { CHECK_VIOLATION, pgErrorCode } from "../db/errors";
import { coupons } from "../db/schema";
import { AppError } from "../errors";
import { lockCoupon } from "./claim-sql";
import { lowerFence, tooLateForFence } from "./fence";
import { type IdempotencyKey, keepDecision, takeKey } from "./idempotency";
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

/** What a create ends as; `replayed` when it is the decision stored under its Idempotency-Key. */
export type CreateResult =
  | { outcome: "created"; coupon: CouponCreated; replayed?: true }
  | { outcome: "exists"; replayed?: true }
  | { outcome: "reused" };

/**
 * Creates a coupon with its full stock, or answers "exists" when the name is taken. A scheduled one is
 * announced on the change feed, so every replica learns at once that claims on it cannot win yet.
 * With a key, the decision is stored in the same transaction, and a request whose key was used before
 * gets that decision again (the coupon as created, whatever happened to it since) or "reused".
 */
export async function createCoupon(
  db: Database,
  name: string,
  amount: number,
  schedule: { startsAt?: Date; endsAt?: Date } = {},
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
    return created ? { outcome: "created", coupon: couponSummary(created) } : { outcome: "exists" };
  };
  if (!key && !scheduled) return insert(db);
  return db.transaction(async (transaction) => {
    const tx = transaction as unknown as Database;
    if (!key) return insert(tx);
    const stored = await takeKey(tx, key);
    if (stored.fingerprint !== key.fingerprint) return { outcome: "reused" };
    if (stored.outcome === "exists") return { outcome: "exists", replayed: true };
    if (stored.outcome === "created") {
      // The request is pinned by the fingerprint, so it says what was created.
      const sale = { starts_at: schedule.startsAt ?? null, ends_at: schedule.endsAt ?? null, active: true };
      return {
        outcome: "created",
        coupon: couponSummary({ name, amount, remaining_amount: amount, ...sale }),
        replayed: true,
      };
    }
    const result = await insert(tx);
    await keepDecision(tx, key, result.outcome);
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
 * change was fenced (fence.ts) with `fence`, taken down here; a fence that expired meanwhile refuses it.
 */
export async function updateCoupon(
  db: Database,
  name: string,
  change: SaleChange,
  fence: string,
): Promise<CouponSummary> {
  try {
    return await db.transaction(async (transaction) => {
      const tx = transaction as unknown as Database;
      await lockCoupon(tx, name);
      if (!(await lowerFence(tx, fence))) throw tooLateForFence();
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
