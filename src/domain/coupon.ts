// A coupon and its sale as every answer speaks of them, and the rule that keeps today's answers byte
// for byte: a sale key (starts_at, ends_at, active) appears only on a coupon that uses it.

/** A coupon without its claimers: a create's, a PATCH's and each list item's answer. */
export interface Coupon {
  name: string;
  amount: number;
  remaining_amount: number;
  starts_at?: string;
  ends_at?: string;
  /** Present (false) only while the sale is paused. */
  active?: false;
}

/** A coupon with the user ids that claimed it, in claim order. */
export interface CouponDetails extends Coupon {
  claimed_by: string[];
}

/** One page of coupons in name order; `next_after` names the last one when more follow. */
export interface CouponPage {
  coupons: Coupon[];
  next_after: string | null;
}

/** The schedule given at creation. */
export interface Schedule {
  startsAt?: Date;
  endsAt?: Date;
}

/** What a PATCH changes; null clears a bound. */
export interface SaleChange {
  startsAt?: Date | null;
  endsAt?: Date | null;
  active?: boolean;
}

/** A coupon's sale columns as stored. */
export interface SaleColumns {
  starts_at: Date | string | null;
  ends_at: Date | string | null;
  active: boolean;
}

/** The optional keys of a coupon's answers: each only when it differs from a plain coupon's. */
export function saleFields(row: SaleColumns): { starts_at?: string; ends_at?: string; active?: false } {
  return {
    ...(row.starts_at !== null ? { starts_at: new Date(row.starts_at).toISOString() } : {}),
    ...(row.ends_at !== null ? { ends_at: new Date(row.ends_at).toISOString() } : {}),
    ...(row.active ? {} : { active: false as const }),
  };
}

/** A coupon without its claimers, as every answer renders it: the sale keys only where used. */
export function couponSummary({
  name,
  amount,
  remaining_amount,
  ...sale
}: { name: string; amount: number; remaining_amount: number } & SaleColumns): Coupon {
  return { name, amount, remaining_amount, ...saleFields(sale) };
}
