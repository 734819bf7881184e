// Races over real concurrent HTTP requests against a listening server and a real PostgreSQL.
// Each runs with group commit (batches) and with one claim per transaction (batchMax = 1).
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { serveForSuite } from "../support/app";
import { createTestDatabase, type TestDatabase } from "../support/database";
import { countStatus } from "../support/http";
import { expectStockInvariant } from "../support/invariant";

let database: TestDatabase;
beforeAll(async () => {
  database = await createTestDatabase({ poolMax: 20 });
});
afterAll(() => database.drop());

for (const batchMax of [256, 1]) {
  describe(`with CLAIM_BATCH_MAX=${batchMax}`, () => {
    const server = serveForSuite(() => database.handle.db, { batchMax });

    for (let round = 1; round <= 5; round++) {
      it(`Flash Sale Attack #${round}: 50 concurrent claims on 5 stock -> exactly 5 win`, async () => {
        const coupon = `flash-${batchMax}-${round}`;
        await server.api.createCoupon(coupon, 5);
        const users = Array.from({ length: 50 }, (_, i) => `buyer-${i}`);
        const results = await Promise.all(users.map((user) => server.api.claim(user, coupon)));

        expect(countStatus(results, 201)).toBe(5);
        expect(countStatus(results, 409, "SOLD_OUT")).toBe(45);
        const winners = results.filter((r) => r.status === 201).map((r) => r.body.user_id);
        const coupon_ = (await server.api.getCoupon(coupon)).body;
        expect(coupon_.remaining_amount).toBe(0);
        expect([...coupon_.claimed_by].sort()).toEqual([...winners].sort());
        await expectStockInvariant(database.sql, coupon);
      });

      it(`Double Dip Attack #${round}: 10 concurrent claims by one user -> exactly 1 wins`, async () => {
        const coupon = `dip-${batchMax}-${round}`;
        await server.api.createCoupon(coupon, 10);
        const results = await Promise.all(Array.from({ length: 10 }, () => server.api.claim("greedy", coupon)));

        expect(countStatus(results, 201)).toBe(1);
        expect(countStatus(results, 409, "ALREADY_CLAIMED")).toBe(9);
        const coupon_ = (await server.api.getCoupon(coupon)).body;
        expect(coupon_).toEqual({ name: coupon, amount: 10, remaining_amount: 9, claimed_by: ["greedy"] });
        await expectStockInvariant(database.sql, coupon);
      });
    }

    it("mixed race: 800 requests, 4 coupons, repeated users, limited stock -> remaining + claims = amount", async () => {
      const coupons = [0, 1, 2, 3].map((i) => ({ name: `mixed-${batchMax}-${i}`, amount: 20 + i * 15 }));
      for (const c of coupons) await server.api.createCoupon(c.name, c.amount);
      // 800 requests from 150 users, so many users hit the same coupon more than once.
      const requests = Array.from({ length: 800 }, (_, i) => ({
        user: `user-${(i * 7919) % 150}`,
        coupon: coupons[i % coupons.length]?.name as string,
      }));
      const results = await Promise.all(requests.map((r) => server.api.claim(r.user, r.coupon)));

      expect(results.every((r) => [201, 409].includes(r.status))).toBe(true);
      for (const c of coupons) {
        const mine = results.filter((_, i) => requests[i]?.coupon === c.name);
        const won = mine.filter((r) => r.status === 201).map((r) => r.body.user_id as string);
        const distinctUsers = new Set(requests.filter((r) => r.coupon === c.name).map((r) => r.user)).size;
        expect(won.length).toBe(Math.min(c.amount, distinctUsers));
        expect(new Set(won).size).toBe(won.length); // nobody won twice
        const rows = await database.sql<{ user_id: string }[]>`
          select user_id from claims where coupon_name = ${c.name} order by id`;
        expect(rows.map((r) => r.user_id).sort()).toEqual([...won].sort());
        await expectStockInvariant(database.sql, c.name);
      }
    });
  });
}
