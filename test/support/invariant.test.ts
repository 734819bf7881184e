// The invariant the races are checked with must itself fail on what it is there to catch: a coupon
// whose winning claims' seqs have a gap, a duplicate, or an order other than their commit order.
import { describe, expect, it } from "bun:test";
import { decideBatch } from "../../src/store/claims";
import { createCoupon } from "../../src/store/coupons";
import { claimsBy, releaseOf } from "./coupons";
import { databaseForSuite } from "./database";
import { expectStockInvariant } from "./invariant";

const database = databaseForSuite();

/** A coupon with claims a1..a3 (seqs 1..3), the second released since. */
async function ledger(name: string): Promise<void> {
  const { db } = database.handle;
  await createCoupon(db, name, 5);
  await decideBatch(db, name, claimsBy(["a1", "a2", "a3"]));
  await decideBatch(db, name, [await releaseOf(db, name, "a2")]);
}

describe("expectStockInvariant", () => {
  it("passes on a coupon as the service leaves it, releases included", async () => {
    await ledger("kept");
    await expectStockInvariant(database.sql, "kept");
  });

  it.each([
    [
      "a gap",
      "gap",
      "update claims set seq = 4 where coupon_name = 'gap' and user_id = 'a3'; update coupons set last_seq = 4 where name = 'gap'",
    ],
    ["a duplicate", "duplicate", "update claims set seq = 1 where coupon_name = 'duplicate' and user_id = 'a3'"],
    ["seqs out of commit order", "swapped", "update claims set seq = 4 - seq where coupon_name = 'swapped'"],
    ["a released claim's seq taken again", "taken", "update claim_releases set seq = 3 where coupon_name = 'taken'"],
    ["last_seq behind the claims", "behind", "update coupons set last_seq = 2 where name = 'behind'"],
  ])("fails on %s", async (_, name, corrupt) => {
    await ledger(name);
    await database.sql.unsafe(corrupt);
    expect(
      await expectStockInvariant(database.sql, name).then(
        () => "passed",
        () => "failed",
      ),
    ).toBe("failed");
  });
});
