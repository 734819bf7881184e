// The invariant every race must keep, checked in SQL: stock left + claims made = stock created,
// nobody holds a coupon twice, and the winning claims' seqs are 1..n in commit order.
import { expect } from "bun:test";
import type postgres from "postgres";

interface Ledger {
  amount: number;
  remaining_amount: number;
  claims: number;
  users: number;
  last_seq: number;
  /** Winning claims ever made: held, or released since. */
  made: number;
  /** The first few claims (by claims.id) whose seq is not their rank in that order. */
  misplaced: { claim_id: string; seq: number; rank: number }[];
}

/**
 * Asserts for `couponName`: remaining_amount + count(claims) = amount; no duplicate claim; and the seqs
 * of its claims held and released (claim_releases.seq, ordered by claim_id: the released row's id) are
 * exactly 1..last_seq in claims.id order, which is the order they were committed under the coupon's
 * lock: no gap, no duplicate, none out of order.
 */
export async function expectStockInvariant(sql: postgres.Sql, couponName: string): Promise<void> {
  const [row] = await sql<Ledger[]>`
    with made as (
      select id as claim_id, seq from claims where coupon_name = ${couponName}
      union all
      select claim_id, seq from claim_releases where coupon_name = ${couponName}
    ),
    ranked as (select claim_id, seq, row_number() over (order by claim_id)::int as rank from made)
    select c.amount, c.remaining_amount, c.last_seq,
           (select count(*)::int from claims where coupon_name = c.name) as claims,
           (select count(distinct user_id)::int from claims where coupon_name = c.name) as users,
           (select count(*)::int from made) as made,
           (select coalesce(json_agg(json_build_object('claim_id', m.claim_id::text, 'seq', m.seq, 'rank', m.rank)
              order by m.rank), '[]'::json)
            from (select * from ranked where seq is distinct from rank order by rank limit 5) m) as misplaced
    from coupons c where c.name = ${couponName}`;
  expect(row).toBeDefined();
  expect((row?.remaining_amount ?? -1) + (row?.claims ?? -1)).toBe(row?.amount ?? 0);
  expect(row?.users).toBe(row?.claims);
  expect({ made: row?.made, misplaced: row?.misplaced }).toEqual({ made: row?.last_seq, misplaced: [] });
}
