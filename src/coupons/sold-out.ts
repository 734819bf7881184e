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
  /**
   * The outcome of a claim on a known sold-out coupon, or undefined when it is not known sold out.
   * Synchronous once the claimers are in memory: the flood after a sell-out takes no promise hop.
   */
  decide(couponName: string, userId: string): ClaimOutcome | Promise<ClaimOutcome> | undefined;
}

interface Entry {
  /** The frozen claimers once read; null when there are too many to hold (indexed reads instead). */
  claimers?: Set<string> | null;
  loaded: Promise<void>;
}

/** Holds the frozen claimer sets of sold-out coupons, each up to `maxClaimers` ids (else reads by index). */
export function createSoldOutCache(db: Database, maxClaimers: number): SoldOutCache {
  const entries = new Map<string, Entry>();
  const outcome = (held: boolean): ClaimOutcome => (held ? "already_claimed" : "sold_out");
  return {
    markSoldOut(couponName) {
      if (entries.has(couponName)) return;
      if (entries.size >= MAX_COUPONS) entries.delete(entries.keys().next().value as string);
      const entry: Entry = {
        loaded: claimersUpTo(db, couponName, maxClaimers).then(
          (claimers) => {
            entry.claimers = claimers;
          },
          () => {
            entries.delete(couponName); // could not read it now; a later sell-out sighting retries
            entry.claimers = null;
          },
        ),
      };
      entries.set(couponName, entry);
    },
    decide(couponName, userId) {
      const entry = entries.get(couponName);
      if (!entry) return undefined;
      if (entry.claimers) return outcome(entry.claimers.has(userId));
      return entry.loaded.then(async () =>
        outcome(entry.claimers ? entry.claimers.has(userId) : await holdsClaim(db, couponName, userId)),
      );
    },
  };
}
