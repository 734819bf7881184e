// The service's sequential rules for one coupon, as the checker applies them: the state a coupon is in,
// and for each request in that state at an instant (the database's clock) the answer it must get and
// the state after. The same rules as docs/api.md, claim_batch_seq and claim_request_batch_seq
// (drizzle/0006) and coupons.ts, in the database's order.

import type { ErrorCode } from "../../../src/domain/errors";
import { type Rejected, rejections } from "../../../src/domain/outcomes";
import { errorStatus } from "../../../src/http/problems";
import { keepsDecision } from "../model";
import type { Request } from "./history";

/** A decision kept under an Idempotency-Key: what a replay of it must repeat. */
export interface Kept {
  fingerprint: string;
  /** The first answer as the client got it, without its request id (a replay repeats it). */
  answer?: unknown;
  /** Nobody saw the first answer (a 503 that went through): what the rules gave, decided at or after `after`. */
  expected?: Expected;
  after?: number;
}

/** One coupon as the rules see it. */
export interface CouponState {
  exists: boolean;
  amount: number;
  /** In claim order (claimed_by's order: a re-claim goes to the end). */
  holders: readonly string[];
  /** The seq of the latest winning claim: the next winner's is one more (never reused after a release). */
  lastSeq: number;
  active: boolean;
  /** Epoch ms on the database's clock; null = no bound. */
  startsAt: number | null;
  endsAt: number | null;
  /** Decisions kept under keys still used later in the history. */
  keys: Readonly<Record<string, Kept>>;
  /** The earliest instant the next decision that depends on time may be made at: decisions never go back. */
  clock: number;
}

export const initialState: CouponState = {
  exists: false,
  amount: 0,
  holders: [],
  lastSeq: 0,
  active: true,
  startsAt: null,
  endsAt: null,
  keys: {},
  clock: Number.NEGATIVE_INFINITY,
};

/** The answer the rules give: status, problem code, success body, headers. */
export interface Expected {
  status: number;
  code?: ErrorCode;
  /** A success's body, exactly, besides `instant`. */
  body?: Record<string, unknown>;
  /** The body field that carries the decision's instant (claimed_at, released_at). */
  instant?: "claimed_at" | "released_at";
  /** SALE_NOT_STARTED: Retry-After is the seconds from the decision to this instant, rounded up, at least 1. */
  opensAt?: number;
  location?: string;
  /** Kept under the request's Idempotency-Key (every answer but those that invite a retry). */
  keep: boolean;
}

export interface Decision {
  expected: Expected;
  /** The state after; undefined when the request changes nothing. */
  after?: CouponState;
}

const iso = (ms: number) => new Date(ms).toISOString();
const instant = (value: string | null | undefined) => (value == null ? value : Date.parse(value));

/** A coupon's answer without claimers (create, PATCH), as couponSummary renders it. */
export function summary(name: string, s: CouponState): Record<string, unknown> {
  return {
    name,
    amount: s.amount,
    remaining_amount: s.amount - s.holders.length,
    ...(s.startsAt !== null ? { starts_at: iso(s.startsAt) } : {}),
    ...(s.endsAt !== null ? { ends_at: iso(s.endsAt) } : {}),
    ...(s.active ? {} : { active: false }),
  };
}

const problem = (code: ErrorCode, keep: boolean, opensAt?: number): Decision => ({
  expected: { status: errorStatus[code], code, keep, ...(opensAt !== undefined ? { opensAt } : {}) },
});
const rejected = (outcome: Rejected, opensAt?: number) =>
  problem(rejections[outcome].code, keepsDecision(outcome), opensAt);

/** What the same request is for its Idempotency-Key: its route and fields. */
export function fingerprint(coupon: string, request: Request): string {
  if (request.kind === "create") {
    return JSON.stringify(["create", coupon, request.amount, instant(request.starts_at), instant(request.ends_at)]);
  }
  return JSON.stringify([request.kind, coupon, "user" in request ? request.user : null]);
}

/** The instants at which a claim's rules change in `s`: its sale's bounds. */
export const boundaries = (s: CouponState): number[] =>
  [s.startsAt, s.endsAt].filter((b): b is number => b !== null).sort((a, b) => a - b);

/** The rules for `request` on `coupon` in state `s`, decided at instant `at`. */
export function decide(coupon: string, s: CouponState, request: Request, at: number): Decision {
  const with_ = (change: Partial<CouponState>): CouponState => ({ ...s, ...change });
  switch (request.kind) {
    case "read":
      return s.exists
        ? { expected: { status: 200, body: { ...summary(coupon, s), claimed_by: [...s.holders] }, keep: false } }
        : problem("COUPON_NOT_FOUND", false);
    case "create": {
      if (s.exists) return problem("COUPON_EXISTS", true);
      const created = with_({
        exists: true,
        amount: request.amount,
        holders: [],
        active: true,
        startsAt: instant(request.starts_at) ?? null,
        endsAt: instant(request.ends_at) ?? null,
      });
      const location = `/api/coupons/${encodeURIComponent(coupon)}`;
      return { expected: { status: 201, body: summary(coupon, created), location, keep: true }, after: created };
    }
    case "patch": {
      const change = {
        ...(request.starts_at !== undefined ? { startsAt: instant(request.starts_at) } : {}),
        ...(request.ends_at !== undefined ? { endsAt: instant(request.ends_at) } : {}),
        ...(request.active !== undefined ? { active: request.active } : {}),
      } as Partial<CouponState>;
      const outOfOrder = (c: Partial<CouponState>) => c.startsAt != null && c.endsAt != null && c.endsAt <= c.startsAt;
      // The body alone first (parseChange), then the coupon (updateCoupon), then the bounds it would have.
      if (Object.keys(change).length === 0 || outOfOrder(change)) return problem("VALIDATION_FAILED", false);
      if (!s.exists) return problem("COUPON_NOT_FOUND", false);
      const changed = with_(change);
      if (outOfOrder(changed)) return problem("VALIDATION_FAILED", false);
      return { expected: { status: 200, body: summary(coupon, changed), keep: false }, after: changed };
    }
    case "release": {
      if (!s.exists) return rejected("not_found");
      if (!s.holders.includes(request.user)) return rejected("claim_not_found");
      const after = with_({ holders: s.holders.filter((h) => h !== request.user) });
      const body = {
        coupon_name: coupon,
        user_id: request.user,
        remaining_amount: after.amount - after.holders.length,
      };
      return { expected: { status: 200, body, instant: "released_at", keep: true }, after };
    }
    case "claim": {
      if (!s.exists) return rejected("not_found");
      if (s.holders.includes(request.user)) return rejected("already_claimed");
      if (!s.active) return rejected("sale_paused");
      if (s.startsAt !== null && at < s.startsAt) return rejected("sale_not_started", s.startsAt);
      if (s.endsAt !== null && at >= s.endsAt) return rejected("sale_ended");
      if (s.holders.length === s.amount) return rejected("sold_out");
      const body = { user_id: request.user, coupon_name: coupon, seq: s.lastSeq + 1 };
      return {
        expected: { status: 201, body, instant: "claimed_at", keep: true },
        after: with_({ holders: [...s.holders, request.user], lastSeq: s.lastSeq + 1 }),
      };
    }
  }
}

/** Whether a request's answer in state `s` depends on when it is decided (a claim past the first rules). */
export const dependsOnTime = (s: CouponState, request: Request): boolean =>
  request.kind === "claim" && s.exists && !s.holders.includes(request.user) && s.active;
