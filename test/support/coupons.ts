// Domain calls as tests make them without the HTTP layer: claims as requests, and a sale's change or
// a release with the fence the service would raise first (src/coupons/fence.ts), no lease to wait.
import type { DecisionRequest } from "../../src/coupons/claim-sql";
import { updateCoupon } from "../../src/coupons/coupons";
import { raiseFence } from "../../src/coupons/fence";
import type { SaleChange } from "../../src/coupons/schedule";
import type { Database } from "../../src/db/client";

/** One claim request per user, in order. */
export const claimsBy = (users: readonly string[]): DecisionRequest[] => users.map((user) => ({ user }));

/** A fence on `coupon` for a change made within 10 s; undefined when there is no such coupon. */
export const fenceOf = (db: Database, coupon: string) => raiseFence(db, coupon, performance.now() + 10_000);

/** The release of `user`'s claim on `coupon`, fenced as the service fences it. */
export async function releaseOf(db: Database, coupon: string, user: string): Promise<DecisionRequest> {
  const fence = await fenceOf(db, coupon);
  return fence === undefined ? { user, release: true } : { user, release: true, fence };
}

/** Changes a sale as a PATCH does: fenced, then changed. */
export async function changeSale(db: Database, coupon: string, change: SaleChange) {
  const fence = await fenceOf(db, coupon);
  if (fence === undefined) throw new Error(`no coupon ${coupon} to change`);
  return updateCoupon(db, coupon, change, fence);
}
