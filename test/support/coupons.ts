// Domain calls as tests make them without the HTTP layer: claims as requests, and a sale's change or
// a release with the fence the service would raise first (src/store/fences.ts), no lease to wait.

import type { SaleChange } from "../../src/domain/coupon";
import type { BatchRequest } from "../../src/store/claims";
import { updateCoupon } from "../../src/store/coupons";
import type { Database } from "../../src/store/database";
import { raiseFence } from "../../src/store/fences";

/** One claim request per user, in order. */
export const claimsBy = (users: readonly string[]): BatchRequest[] => users.map((user) => ({ user }));

/** A fence on `coupon` for a change made within 10 s; undefined when there is no such coupon. */
export const fenceOf = (db: Database, coupon: string) => raiseFence(db, coupon, performance.now() + 10_000);

/** The release of `user`'s claim on `coupon`, fenced as the service fences it. */
export async function releaseOf(db: Database, coupon: string, user: string): Promise<BatchRequest> {
  const fence = await fenceOf(db, coupon);
  return fence === undefined ? { user, release: true } : { user, release: true, fence };
}

/** Changes a sale as a PATCH does: fenced, then changed. */
export async function changeSale(db: Database, coupon: string, change: SaleChange) {
  const fence = await fenceOf(db, coupon);
  if (fence === undefined) throw new Error(`no coupon ${coupon} to change`);
  return updateCoupon(db, coupon, change, fence);
}
