// The claim rules applied one claim at a time: the reference that batches and races are compared to.
import type { DecidedOutcome } from "../../src/coupons/outcomes";

type ClaimOutcome = Exclude<DecidedOutcome, "released" | "claim_not_found">;

export interface ModelCoupon {
  remaining: number;
  holders: Set<string>;
  /** False while paused (default true). */
  active?: boolean;
  /** The sale's bounds, epoch ms; absent or null = none. */
  startsAt?: number | null;
  endsAt?: number | null;
}

/**
 * Decides one claim on `coupon` (undefined = no such coupon) at `now` (epoch ms by the database's
 * clock), updating it like the service must. The rules in the order the service checks them.
 */
export function modelClaim(coupon: ModelCoupon | undefined, userId: string, now = Date.now()): ClaimOutcome {
  if (!coupon) return "not_found";
  if (coupon.holders.has(userId)) return "already_claimed";
  if (coupon.active === false) return "sale_paused";
  if (coupon.startsAt != null && now < coupon.startsAt) return "sale_not_started";
  if (coupon.endsAt != null && now >= coupon.endsAt) return "sale_ended";
  if (coupon.remaining === 0) return "sold_out";
  coupon.remaining--;
  coupon.holders.add(userId);
  return "created";
}

/** Releases `userId`'s claim on `coupon` like the service must: the unit goes back to stock. */
export function modelRelease(coupon: ModelCoupon | undefined, userId: string): DecidedOutcome {
  if (!coupon) return "not_found";
  if (!coupon.holders.delete(userId)) return "claim_not_found";
  coupon.remaining++;
  return "released";
}
