// The claim rules applied one claim at a time: the reference that batches and races are compared to.
import type { DecidedOutcome as ClaimOutcome } from "../../src/coupons/outcomes";

export interface ModelCoupon {
  remaining: number;
  holders: Set<string>;
}

/** Decides one claim on `coupon` (undefined = no such coupon), updating it like the service must. */
export function modelClaim(coupon: ModelCoupon | undefined, userId: string): ClaimOutcome {
  if (!coupon) return "not_found";
  if (coupon.holders.has(userId)) return "already_claimed";
  if (coupon.remaining === 0) return "sold_out";
  coupon.remaining--;
  coupon.holders.add(userId);
  return "created";
}
