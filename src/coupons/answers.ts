// What a claim may be answered from memory, without a database round trip: a claim on a coupon where
// no claim can win (paused, not open yet, ended, or sold out), answered with the holders in mind
// (a holder is told ALREADY_CLAIMED first, as the database would).
//
// Such a state ends only by a change (a pause or resume, a schedule change, a release of stock) or,
// for a sale not open yet, by its opening. Every change is announced on the change feed
// (db/changes.ts), which calls invalidate(coupon) on every replica; the opening is a time, compared
// on the database's clock (this process's clock plus the measured offset) with a margin, and claims
// within the margin go to the database. While the feed is down nothing is answered from memory and
// nothing is learnt: a change made meanwhile would be missed.
import type { ChangeFeed } from "../db/changes";
import type { Database } from "../db/client";
import { withDeadline } from "../db/deadline";
import type { Logger } from "../log";
import { type ClaimSnapshot, claimSnapshot } from "./claim-sql";

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

export type MemoryOutcome = "already_claimed" | "sale_paused" | "sale_not_started" | "sale_ended" | "sold_out";

export interface MemoryAnswer {
  outcome: MemoryOutcome;
  /** Seconds to the opening, for sale_not_started. */
  retryAfter?: number;
}

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

/** Why no claim can win, as of the snapshot; `opensAt` (database ms) bounds a "not started". */
interface Closed {
  paused: boolean;
  opensAt: number | null;
  ended: boolean;
  soldOut: boolean;
}

interface Entry {
  /** Undefined while loading. */
  closed?: Closed;
  /** Undefined while loading; null when the coupon has too many claimers to hold. */
  claimers?: Set<string> | null;
  bytes: number;
}

// A Set entry plus a string header (measured ~100 bytes for a 15-character id on Bun 1.4), rounded up.
const idBytes = (id: string) => 80 + 2 * id.length;

// Shared, frozen answers: a flood answered from memory allocates nothing per claim (but Retry-After).
const fixed = Object.fromEntries(
  (["already_claimed", "sale_paused", "sale_ended", "sold_out"] as const).map((outcome) => [
    outcome,
    Object.freeze({ outcome }),
  ]),
) as Record<Exclude<MemoryOutcome, "sale_not_started">, MemoryAnswer>;

/** What the snapshot says of the coupon's claims, or undefined when one could win now. */
function closedBy(snapshot: ClaimSnapshot): Closed | undefined {
  const closed: Closed = {
    paused: !snapshot.active,
    opensAt: snapshot.startsAt !== null && snapshot.startsAt > snapshot.now ? snapshot.startsAt : null,
    ended: snapshot.endsAt !== null && snapshot.endsAt <= snapshot.now,
    soldOut: snapshot.remaining === 0,
  };
  return closed.paused || closed.opensAt !== null || closed.ended || closed.soldOut ? closed : undefined;
}

/** Creates the in-memory answers of one process. */
export function createAnswers(db: Database, options: AnswersOptions): Answers {
  const { feed } = options;
  const entries = new Map<string, Entry>(); // insertion order = age
  let bytes = 0;
  const dbNow = () => feed.now() + feed.clock.offsetMs;
  // The clock offset is known within its uncertainty: the margin grows by it.
  const margin = () => options.marginMs + feed.clock.uncertaintyMs;

  function forget(couponName: string): void {
    const entry = entries.get(couponName);
    if (!entry) return;
    bytes -= entry.bytes;
    entries.delete(couponName);
  }

  function hold(couponName: string, entry: Entry, snapshot: ClaimSnapshot | undefined): void {
    if (entries.get(couponName) !== entry) return; // invalidated (or the feed lost) while loading
    const closed = snapshot && closedBy(snapshot);
    if (!snapshot || !closed) {
      forget(couponName);
      return;
    }
    const claimers = snapshot.claimers;
    const size = claimers?.reduce((sum, id) => sum + idBytes(id), 0) ?? 0;
    entry.closed = closed;
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

  return {
    answer(couponName, userId) {
      const entry = entries.get(couponName);
      if (!entry?.closed || !feed.live) return undefined;
      const { closed } = entry;
      if (closed.opensAt !== null) {
        const opensIn = closed.opensAt - dbNow();
        // Near the opening the database decides; past it (with the margin again) the entry is stale.
        if (opensIn <= -margin()) forget(couponName);
        if (opensIn <= margin()) return undefined;
      }
      const claimers = entry.claimers;
      if (!claimers) return undefined;
      if (claimers.has(userId)) return fixed.already_claimed;
      if (closed.paused) return fixed.sale_paused;
      if (closed.opensAt !== null) {
        return { outcome: "sale_not_started", retryAfter: Math.ceil((closed.opensAt - dbNow()) / 1000) };
      }
      return closed.ended ? fixed.sale_ended : fixed.sold_out;
    },
    learn(couponName) {
      if (entries.has(couponName) || !feed.live) return Promise.resolve();
      const entry: Entry = { bytes: 0 };
      entries.set(couponName, entry);
      return withDeadline(claimSnapshot(db, couponName, options.maxClaimers), options.loadTimeoutMs).then(
        (snapshot) => hold(couponName, entry, snapshot),
        (error) => {
          // Not now; claims go to the database meanwhile and a later refusal retries.
          if (entries.get(couponName) === entry) entries.delete(couponName);
          options.log.warn("could not load a coupon's state for answers from memory", {
            coupon_name: couponName,
            err: { message: (error as Error).message },
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
