// The sold-out fast path.
//
// INVARIANT relied on here: stock only ever goes down, and a claim is never released. So once a coupon
// has been seen with remaining_amount = 0 (committed), its set of claimers can never change again, and
// a claim on it can be answered without the lock: already_claimed for a holder, sold_out for anyone
// else. A future restock or release feature must invalidate this cache (and the replicas' caches).
import type { Database } from "../db/client";
import { type ClaimOutcome, claimersUpTo, holdsClaim } from "./claim";

// How many sold-out coupons are remembered; the oldest is forgotten first.
const MAX_COUPONS = 1000;

export interface SoldOutCache {
  /** Records that `couponName` was committed with no stock left. */
  markSoldOut(couponName: string): void;
  /** The outcome of a claim on a known sold-out coupon; undefined (synchronously) when not known sold out. */
  decide(couponName: string, userId: string): Promise<ClaimOutcome> | undefined;
}

/** Holds the frozen claimer sets of sold-out coupons, each up to `maxClaimers` ids (else reads by index). */
export function createSoldOutCache(db: Database, maxClaimers: number): SoldOutCache {
  const claimers = new Map<string, Promise<Set<string> | null>>();
  return {
    markSoldOut(couponName) {
      if (claimers.has(couponName)) return;
      if (claimers.size >= MAX_COUPONS) claimers.delete(claimers.keys().next().value as string);
      const load = claimersUpTo(db, couponName, maxClaimers).catch(() => {
        claimers.delete(couponName); // could not read it now; a later sell-out sighting retries
        return null;
      });
      claimers.set(couponName, load);
    },
    decide(couponName, userId) {
      const load = claimers.get(couponName);
      if (!load) return undefined;
      return load.then(async (set) => {
        const held = set ? set.has(userId) : await holdsClaim(db, couponName, userId);
        return held ? "already_claimed" : "sold_out";
      });
    },
  };
}
