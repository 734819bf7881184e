// What a claim may be answered from memory, without a database round trip: today, a claim on a coupon
// already seen sold out.
//
// INVARIANT relied on: stock only goes down and a claim is never released, so once a coupon has been
// committed with remaining_amount = 0, its claimers can never change: a claim on it is already_claimed
// for a holder and sold_out for anyone else. Whatever breaks that (a restock, a release) must call
// invalidate(coupon), on every replica.
import type { Database } from "../db/client";
import { withDeadline } from "../db/deadline";
import type { Logger } from "../log";
import { claimersUpTo } from "./claim-sql";

export interface AnswersOptions {
  /** Most claimers held for one coupon; a coupon with more is decided by the database. */
  maxClaimers: number;
  /** Most bytes of claimer ids held for the whole process; the oldest coupons are forgotten first. */
  maxBytes: number;
  /** How long loading one coupon's claimers may take. */
  loadTimeoutMs: number;
  log: Logger;
}

export interface Answers {
  /** The outcome from memory, or undefined: the database must decide. Synchronous: no promise hop. */
  answer(couponName: string, userId: string): "already_claimed" | "sold_out" | undefined;
  /** Records that `couponName` was committed with no stock left; loads its claimers in the background. */
  soldOut(couponName: string): void;
  /** Forgets what is known of `couponName`: its stock or claimers may have changed. */
  invalidate(couponName: string): void;
  /** Estimated bytes held. */
  readonly bytes: number;
}

interface Entry {
  /** Undefined while loading; null when the coupon has too many claimers to hold. */
  claimers?: Set<string> | null;
  bytes: number;
}

// A Set entry plus a string header (measured ~100 bytes for a 15-character id on Bun 1.4), rounded up.
const idBytes = (id: string) => 80 + 2 * id.length;

/** Creates the in-memory answers of one process. */
export function createAnswers(db: Database, options: AnswersOptions): Answers {
  const entries = new Map<string, Entry>(); // insertion order = age
  let bytes = 0;

  function forget(couponName: string): void {
    const entry = entries.get(couponName);
    if (!entry) return;
    bytes -= entry.bytes;
    entries.delete(couponName);
  }

  function hold(couponName: string, entry: Entry, claimers: string[] | null): void {
    if (entries.get(couponName) !== entry) return; // invalidated while loading
    const size = claimers?.reduce((sum, id) => sum + idBytes(id), 0) ?? 0;
    if (!claimers || size > options.maxBytes) {
      entry.claimers = null; // remembered as "too big": the database decides, no reload per sighting
      return;
    }
    for (const [name] of entries) {
      if (bytes + size <= options.maxBytes) break;
      if (name !== couponName) forget(name);
    }
    entry.claimers = new Set(claimers);
    entry.bytes = size;
    bytes += size;
  }

  return {
    answer(couponName, userId) {
      const claimers = entries.get(couponName)?.claimers;
      if (!claimers) return undefined;
      return claimers.has(userId) ? "already_claimed" : "sold_out";
    },
    soldOut(couponName) {
      if (entries.has(couponName)) return;
      const entry: Entry = { bytes: 0 };
      entries.set(couponName, entry);
      withDeadline(claimersUpTo(db, couponName, options.maxClaimers), options.loadTimeoutMs).then(
        (claimers) => hold(couponName, entry, claimers),
        (error) => {
          // Not now; claims go to the database meanwhile and a later sell-out sighting retries.
          if (entries.get(couponName) === entry) entries.delete(couponName);
          options.log.warn("could not load a sold-out coupon's claimers", {
            coupon_name: couponName,
            err: { message: (error as Error).message },
          });
        },
      );
    },
    invalidate: forget,
    get bytes() {
      return bytes;
    },
  };
}
