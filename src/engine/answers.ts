// What a claim may be answered from memory, without a database round trip: a claim on a coupon where
// no claim can win (paused, not open yet, ended, or sold out), answered by the database's rules in
// the database's order (a holder hears ALREADY_CLAIMED first; then paused, not started, ended, sold
// out), on the database's clock, so memory gives the answer the database would give at that instant.
//
// Such a state ends only by a change (a pause or resume, a schedule change, a release of stock) or by
// time (an opening; an end turns SOLD_OUT into SALE_ENDED). Every change is fenced: its
// fence reaches every replica, which forgets the coupon, before the change is made, and no replica
// learns the coupon while a fence stands (store/fences.ts). Time is compared on the database's clock
// (store/changes.ts) with a margin: claims within it of a bound go to the database. Memory answers
// only under the change feed's lease (store/changes.ts): while it does not hold, nothing is answered
// from memory.
import { type ClaimResult, plainResults } from "../domain/claim";
import { errorFields, type Logger } from "../log";
import type { ChangeFeed } from "../store/changes";
import { type ClaimSnapshot, claimSnapshot } from "../store/claims";
import type { Database } from "../store/database";
import { withDeadline } from "../store/deadline";

export interface AnswersOptions {
  feed: ChangeFeed;
  /** Most claimers held for one coupon; a coupon with more is decided by the database. */
  maxClaimers: number;
  /** Most bytes of claimer ids held for the whole process; the oldest coupons are forgotten first. */
  maxBytes: number;
  /** SCHEDULE_MARGIN_MS: how close to an opening (database clock) claims go to the database. */
  marginMs: number;
  /** How long loading one coupon's snapshot may take. */
  loadTimeoutMs: number;
  log: Logger;
}

/** What memory may answer: the refusals of a coupon on which no claim can win. */
export type MemoryAnswer = Extract<
  ClaimResult,
  { outcome: "already_claimed" | "sale_paused" | "sale_not_started" | "sale_ended" | "sold_out" }
>;

export interface Answers {
  /** The answer from memory, or undefined: the database must decide. Synchronous: no promise hop. */
  answer(couponName: string, userId: string): MemoryAnswer | undefined;
  /**
   * A claim on `couponName` was just refused by the database: load what may be answered from memory.
   * Resolves once the load has settled (callers need not wait; tests do); never rejects.
   */
  learn(couponName: string): Promise<void>;
  /** Forgets what is known of `couponName`: its state or claimers may have changed. */
  invalidate(couponName: string): void;
  /** Forgets everything (the change feed was lost). */
  clear(): void;
  /** Estimated bytes held. */
  readonly bytes: number;
}

/** What a snapshot in which no claim could win says, by the database's clock (epoch ms). */
interface Known {
  paused: boolean;
  startsAt: number | null;
  endsAt: number | null;
  soldOut: boolean;
  /** When claims may start to win (the opening of a sale otherwise open with stock): Infinity for never. */
  validUntil: number;
}

interface Entry {
  /** Undefined while loading, or while a change of the coupon is fenced. */
  known?: Known;
  /** Undefined while loading; null when the coupon has too many claimers to hold. */
  claimers?: Set<string> | null;
  bytes: number;
  /** A fenced coupon is not asked about again before this (performance.now() ms). */
  retryAt?: number;
}

// How long a replica waits before asking again about a coupon whose change is fenced: the change's
// own notification usually comes first, and forgets the coupon at once.
const FENCED_RETRY_MS = 50;

// A Set entry plus a string header (measured ~100 bytes for a 15-character id on Bun 1.4), rounded up.
const idBytes = (id: string) => 80 + 2 * id.length;

/** What the snapshot says, or undefined when a claim could win as of it (nothing to answer from memory). */
function knownFrom(snapshot: Extract<ClaimSnapshot, { fenced: false }>): Known | undefined {
  const { now, startsAt, endsAt } = snapshot;
  const paused = !snapshot.active;
  const notStarted = startsAt !== null && startsAt > now;
  const ended = endsAt !== null && endsAt <= now;
  const soldOut = snapshot.remaining === 0;
  if (!paused && !notStarted && !ended && !soldOut) return undefined;
  const opensLater = notStarted && !paused && !soldOut;
  return {
    paused,
    startsAt,
    endsAt,
    soldOut,
    validUntil: opensLater ? (startsAt as number) : Number.POSITIVE_INFINITY,
  };
}

/** Creates the in-memory answers of one process. */
export function createAnswers(db: Database, options: AnswersOptions): Answers {
  const { feed } = options;
  const entries = new Map<string, Entry>(); // insertion order = age
  let bytes = 0;
  // The database's clock is known within its uncertainty: the margin grows by it.
  const margin = () => options.marginMs + feed.clock.uncertaintyMs;

  function forget(couponName: string): void {
    const entry = entries.get(couponName);
    if (!entry) return;
    bytes -= entry.bytes;
    entries.delete(couponName);
  }

  function hold(couponName: string, entry: Entry, snapshot: ClaimSnapshot | undefined): void {
    if (entries.get(couponName) !== entry) return; // invalidated (or the feed lost) while loading
    if (snapshot?.fenced) {
      entry.retryAt = performance.now() + FENCED_RETRY_MS; // a change is coming: ask again after it
      return;
    }
    const known = snapshot && knownFrom(snapshot);
    if (!snapshot || !known) {
      forget(couponName);
      return;
    }
    const claimers = snapshot.claimers;
    const size = claimers?.reduce((sum, id) => sum + idBytes(id), 0) ?? 0;
    entry.known = known;
    if (!claimers || size > options.maxBytes) {
      entry.claimers = null; // remembered as "too big": the database decides, no reload per refusal
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

  /** The database's answer at `now` (± `m`) by its rules in its order, or undefined where `now` is too close to a bound to tell. */
  function rules(known: Known, holder: boolean, now: number, m: number): MemoryAnswer | undefined {
    if (holder) return plainResults.already_claimed;
    if (known.paused) return plainResults.sale_paused;
    if (known.startsAt !== null && now - m < known.startsAt) {
      if (now + m >= known.startsAt) return undefined;
      return { outcome: "sale_not_started", retryAfter: Math.ceil((known.startsAt - now) / 1000) };
    }
    if (known.endsAt !== null && now + m >= known.endsAt)
      return now - m >= known.endsAt ? plainResults.sale_ended : undefined;
    return known.soldOut ? plainResults.sold_out : undefined;
  }

  return {
    answer(couponName, userId) {
      const entry = entries.get(couponName);
      if (!entry?.known || !feed.leased()) return undefined;
      const { known, claimers } = entry;
      if (!claimers) return undefined;
      // No bound to compare with (a sold-out or paused sale without a schedule): no clock to read.
      if (known.startsAt === null && known.endsAt === null) return rules(known, claimers.has(userId), 0, 0);
      const now = feed.clock.now();
      const m = margin();
      // Claims may win from validUntil on: near it the database decides; past it the entry is stale.
      if (now + m >= known.validUntil) {
        if (now - m >= known.validUntil) forget(couponName);
        return undefined;
      }
      return rules(known, claimers.has(userId), now, m);
    },
    learn(couponName) {
      const held = entries.get(couponName);
      if ((held && !(held.retryAt !== undefined && held.retryAt <= performance.now())) || !feed.live) {
        return Promise.resolve();
      }
      const entry: Entry = { bytes: 0 };
      forget(couponName);
      entries.set(couponName, entry);
      return withDeadline(claimSnapshot(db, couponName, options.maxClaimers), options.loadTimeoutMs).then(
        (snapshot) => hold(couponName, entry, snapshot),
        (error) => {
          // Not now; claims go to the database meanwhile and a later refusal retries.
          if (entries.get(couponName) === entry) entries.delete(couponName);
          options.log.warn("could not load a coupon's state for answers from memory", {
            coupon_name: couponName,
            ...errorFields(error),
          });
        },
      );
    },
    invalidate: forget,
    clear() {
      entries.clear();
      bytes = 0;
    },
    get bytes() {
      return bytes;
    },
  };
}
