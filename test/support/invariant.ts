// The invariant every race must keep, checked in SQL: stock left + claims made = stock created,
// and nobody holds a coupon twice.
import { expect } from "bun:test";
import type postgres from "postgres";

/** Asserts remaining_amount + count(claims) = amount and no duplicate claim for `couponName`. */
export async function expectStockInvariant(sql: postgres.Sql, couponName: string): Promise<void> {
  const [row] = await sql<{ amount: number; remaining_amount: number; claims: number; users: number }[]>`
    select c.amount, c.remaining_amount,
           (select count(*)::int from claims where coupon_name = c.name) as claims,
           (select count(distinct user_id)::int from claims where coupon_name = c.name) as users
    from coupons c where c.name = ${couponName}`;
  expect(row).toBeDefined();
  expect((row?.remaining_amount ?? -1) + (row?.claims ?? -1)).toBe(row?.amount ?? 0);
  expect(row?.users).toBe(row?.claims);
}
