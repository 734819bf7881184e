// The claim rules applied one request at a time (claims, releases, Idempotency-Keys), and the search
// for a one-by-one order that explains concurrent answers: the reference batches and races are compared to.
import type { DecidedOutcome } from "../../src/domain/outcomes";

type ClaimOutcome = Exclude<DecidedOutcome, "released" | "claim_not_found">;

export interface ModelCoupon {
  remaining: number;
  holders: Set<string>;
  /** False while paused (default true). */
  active?: boolean;
  /** The sale's bounds, epoch ms; absent or null = none. */
  startsAt?: number | null;
  endsAt?: number | null;
  /** The seq of the latest winning claim (absent = 0): the next winner's is one more. */
  lastSeq?: number;
}

/**
 * Decides one claim on `coupon` (undefined = no such coupon) at `now` (epoch ms by the database's
 * clock), updating it like the service must; a winner's seq is then `coupon.lastSeq`. The rules in
 * the order the service checks them.
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
  coupon.lastSeq = (coupon.lastSeq ?? 0) + 1;
  return "created";
}

/** Releases `userId`'s claim on `coupon` like the service must: the unit goes back to stock. */
export function modelRelease(coupon: ModelCoupon | undefined, userId: string): DecidedOutcome {
  if (!coupon) return "not_found";
  if (!coupon.holders.delete(userId)) return "claim_not_found";
  coupon.remaining++;
  return "released";
}

/** A copy of `coupon` to decide on, leaving the original as it was (undefined stays undefined). */
export function copyCoupon(coupon: ModelCoupon | undefined): ModelCoupon | undefined {
  return coupon && { ...coupon, holders: new Set(coupon.holders) };
}

// Idempotency-Key, as the service must keep it. A keyed request is always decided by the database,
// which stores its decision in the transaction that applied it; so the rules below are what the
// database holds, whichever instance took the request and whatever that instance remembers.

/** The decisions a key keeps: every one but those that invite the same request again (and 503s, never decided). */
const keptOutcomes: ReadonlySet<string> = new Set<DecidedOutcome>([
  "created",
  "released",
  "claim_not_found",
  "already_claimed",
  "sold_out",
  "sale_ended",
  "not_found",
]);

/** True when a request answered `outcome` leaves its decision under its key (SALE_PAUSED, SALE_NOT_STARTED do not). */
export const keepsDecision = (outcome: string): boolean => keptOutcomes.has(outcome);

/** What a request with a key gets before anything is decided for it. */
export type KeyVerdict<A> =
  /** The key holds this request's decision: the same answer again, nothing applied. */
  | { verdict: "replayed"; outcome: string; answer: A }
  /** The key holds another request's decision (other fields or route): 422, nothing applied. */
  | { verdict: "reused" }
  /** The key is new, or its last request's answer was not kept: the request executes. */
  | { verdict: "executes" };

/**
 * The keys of one sequence of requests: `pin` says which requests are the same (the fingerprint's
 * route and fields). Keys never expire here (the service's TTL is hours).
 */
export function createKeyStore<R, A>(pin: (request: R) => string) {
  const entries = new Map<string, { request: R; kept?: { outcome: string; answer: A } }>();
  return {
    verdict(key: string, request: R): KeyVerdict<A> {
      const entry = entries.get(key);
      if (!entry?.kept) return { verdict: "executes" };
      if (pin(entry.request) !== pin(request)) return { verdict: "reused" };
      return { verdict: "replayed", ...entry.kept };
    },
    /** Records how a request that executed with `key` was answered; kept only when keepsDecision says so. */
    decided(key: string, request: R, outcome: string, answer: A): void {
      entries.set(key, keepsDecision(outcome) ? { request, kept: { outcome, answer } } : { request });
    },
    /** The last request that executed with `key`, and the decision kept for it (none: the key is free). */
    get: (key: string) => entries.get(key),
    keys: () => [...entries.keys()],
  };
}

/** What OrderRules.apply returns for a step whose answer is not what the rules give there. */
export const MISFIT: unique symbol = Symbol("misfit");

export interface OrderRules<S, T> {
  /** The state after `step`, or MISFIT when the answer `step` got is not what the rules give in `state`. */
  apply(state: S, step: T): S | typeof MISFIT;
  /** Equal for states that decide every later step alike. */
  stateKey(state: S): string;
  /** Equal for steps that are interchangeable (same request, same answer): only the first is tried. */
  alike(step: T): string;
  /** Whether the order may end in `state` (what the service holds afterwards). */
  ends(state: S): boolean;
}

/**
 * A one-by-one order of `steps` from `start` in which every step gets the answer it got and which
 * ends where `rules.ends` accepts, or undefined when none does: how concurrent requests are judged
 * (their answers must be those of SOME sequential order). A depth-first search that remembers the
 * (steps placed, state) pairs that failed; it throws past `budget` states visited rather than run for ever.
 */
export function sequentialOrder<S, T>(
  start: S,
  steps: readonly T[],
  rules: OrderRules<S, T>,
  budget = 1_000_000,
): T[] | undefined {
  const failed = new Set<string>();
  const placed = steps.map(() => false);
  const order: T[] = [];
  let nodes = 0;
  const search = (state: S): boolean => {
    if (order.length === steps.length) return rules.ends(state);
    const memo = `${placed.map((p) => (p ? 1 : 0)).join("")} ${rules.stateKey(state)}`;
    if (failed.has(memo)) return false;
    if (++nodes > budget) throw new Error(`no order found within ${budget} states of the search`);
    const tried = new Set<string>();
    for (const [i, step] of steps.entries()) {
      if (placed[i]) continue;
      const kind = rules.alike(step);
      if (tried.has(kind)) continue;
      tried.add(kind);
      const next = rules.apply(state, step);
      if (next === MISFIT) continue;
      placed[i] = true;
      order.push(step);
      if (search(next)) return true;
      order.pop();
      placed[i] = false;
    }
    failed.add(memo);
    return false;
  };
  return search(start) ? [...order] : undefined;
}
