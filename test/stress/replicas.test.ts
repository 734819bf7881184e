// Several replicas on one PostgreSQL: three app instances, each with its own connection pool and its
// own claim queue, receive the requests of one race round-robin. Only the advisory lock in the
// database stands between them, so these races prove it serialises batches across processes.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { loadConfig } from "../../src/config";
import { type DatabaseHandle, openPostgres } from "../../src/store/client";
import { buildApp, listen } from "../support/app";
import { createTestDatabase, type TestDatabase } from "../support/database";
import { type Client, client, countStatus } from "../support/http";
import { expectStockInvariant } from "../support/invariant";

const REPLICAS = 3;

let database: TestDatabase;
let pools: DatabaseHandle[];
beforeAll(async () => {
  database = await createTestDatabase({ poolMax: 2 });
  const config = loadConfig({ DATABASE_URL: database.url, DATABASE_POOL_MAX: "5" });
  pools = Array.from({ length: REPLICAS }, () => openPostgres(database.url, config));
});
afterAll(async () => {
  await Promise.all(pools.map((pool) => pool.close()));
  await database.drop();
});

for (const [batchMax, rounds] of [
  [64, 3],
  [1, 1],
] as const) {
  describe(`${REPLICAS} replicas with CLAIM_BATCH_MAX=${batchMax}`, () => {
    let replicas: Client[];
    let stops: (() => Promise<void>)[];
    beforeAll(() => {
      const servers = pools.map((pool) => listen(buildApp(pool.db, { batchMax }).app));
      replicas = servers.map((server) => client(server.baseUrl));
      stops = servers.map((server) => server.stop);
    });
    afterAll(() => Promise.all(stops.map((stop) => stop())));

    /** The replica that serves request number `i`: round-robin, like a load balancer. */
    const via = (i: number) => replicas[i % REPLICAS] as Client;

    it("serves a coupon created on one replica from the others", async () => {
      const coupon = `shared-${batchMax}`;
      expect((await via(0).createCoupon(coupon, 2)).status).toBe(201);
      expect((await via(1).createCoupon(coupon, 2)).body.code).toBe("COUPON_EXISTS");
      expect((await via(1).claim("ann", coupon)).status).toBe(201);
      expect((await via(2).claim("ann", coupon)).body.code).toBe("ALREADY_CLAIMED");
      expect((await via(0).claim("ben", coupon)).status).toBe(201);
      expect((await via(1).claim("cat", coupon)).body.code).toBe("SOLD_OUT");
      expect((await via(2).getCoupon(coupon)).body).toEqual({
        name: coupon,
        amount: 2,
        remaining_amount: 0,
        claimed_by: ["ann", "ben"],
      });
      await expectStockInvariant(database.sql, coupon);
    });

    for (let round = 1; round <= rounds; round++) {
      it(`Flash Sale Attack #${round}: 50 concurrent claims on 5 stock across replicas -> exactly 5 win`, async () => {
        const coupon = `flash-${batchMax}-${round}`;
        expect((await via(round).createCoupon(coupon, 5)).status).toBe(201);
        const results = await Promise.all(Array.from({ length: 50 }, (_, i) => via(i).claim(`buyer-${i}`, coupon)));

        expect(countStatus(results, 201)).toBe(5);
        expect(countStatus(results, 409, "SOLD_OUT")).toBe(45);
        const winners = results.filter((r) => r.status === 201).map((r) => r.body.user_id as string);
        for (const replica of replicas) {
          const read = (await replica.getCoupon(coupon)).body;
          expect(read.remaining_amount).toBe(0);
          expect([...read.claimed_by].sort()).toEqual([...winners].sort());
        }
        await expectStockInvariant(database.sql, coupon);
      });

      it(`Double Dip Attack #${round}: 10 concurrent claims by one user across replicas -> exactly 1 wins`, async () => {
        const coupon = `dip-${batchMax}-${round}`;
        expect((await via(round).createCoupon(coupon, 10)).status).toBe(201);
        const results = await Promise.all(Array.from({ length: 10 }, (_, i) => via(i).claim("greedy", coupon)));

        expect(countStatus(results, 201)).toBe(1);
        expect(countStatus(results, 409, "ALREADY_CLAIMED")).toBe(9);
        expect((await via(round + 1).getCoupon(coupon)).body).toEqual({
          name: coupon,
          amount: 10,
          remaining_amount: 9,
          claimed_by: ["greedy"],
        });
        await expectStockInvariant(database.sql, coupon);
      });
    }

    it("mixed race: 900 requests on 5 coupons from 180 users across replicas -> remaining + claims = amount", async () => {
      const coupons = [0, 1, 2, 3, 4].map((i) => ({ name: `mixed-${batchMax}-${i}`, amount: 10 + i * 20 }));
      for (const [i, c] of coupons.entries()) expect((await via(i).createCoupon(c.name, c.amount)).status).toBe(201);
      // 900 requests from 180 users: most users hit the same coupon several times, on different replicas.
      const requests = Array.from({ length: 900 }, (_, i) => ({
        user: `user-${(i * 7919) % 180}`,
        coupon: coupons[(i * 31) % coupons.length]?.name as string,
      }));
      const results = await Promise.all(requests.map((r, i) => via(i).claim(r.user, r.coupon)));

      expect(results.filter((r) => r.status !== 201 && r.status !== 409).map((r) => r.body)).toEqual([]);
      for (const c of coupons) {
        const mine = results.filter((_, i) => requests[i]?.coupon === c.name);
        const won = mine.filter((r) => r.status === 201).map((r) => r.body.user_id as string);
        const distinctUsers = new Set(requests.filter((r) => r.coupon === c.name).map((r) => r.user)).size;
        expect(won.length).toBe(Math.min(c.amount, distinctUsers));
        expect(new Set(won).size).toBe(won.length);
        const [row] = await database.sql<{ remaining_amount: number; claims: number }[]>`
          select remaining_amount, (select count(*)::int from claims where coupon_name = ${c.name}) as claims
          from coupons where name = ${c.name}`;
        expect(row?.claims).toBe(won.length);
        expect((row?.remaining_amount ?? -1) + won.length).toBe(c.amount);
        const rows = await database.sql<{ user_id: string }[]>`
          select user_id from claims where coupon_name = ${c.name}`;
        expect(rows.map((r) => r.user_id).sort()).toEqual([...won].sort());
        await expectStockInvariant(database.sql, c.name);
      }
    });
  });
}
