// decideClaims (claim_batch): one batch = the same answers and state as the claims applied one by one in order.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { drizzle } from "drizzle-orm/postgres-js";
import postgres from "postgres";
import { loadConfig } from "../../src/config";
import { decideClaims } from "../../src/coupons/claim-sql";
import { createCoupon } from "../../src/coupons/coupons";
import { openPostgres } from "../../src/db/client";
import * as schema from "../../src/db/schema";
import { createTestDatabase, type TestDatabase } from "../support/database";
import { expectStockInvariant } from "../support/invariant";
import { modelClaim } from "../support/model";

let database: TestDatabase;
beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(() => database.drop());

const outcomes = async (coupon: string, users: string[]) =>
  (await decideClaims(database.handle.db, coupon, users)).decisions.map((d) => d.outcome);

describe("decideClaims", () => {
  it("lets a user repeated inside one batch win at most once (later copies ALREADY_CLAIMED)", async () => {
    await createCoupon(database.handle.db, "dup-in-batch", 10);
    expect(await outcomes("dup-in-batch", ["a", "b", "a", "a", "c"])).toEqual([
      "created",
      "created",
      "already_claimed",
      "already_claimed",
      "created",
    ]);
    await expectStockInvariant(database.sql, "dup-in-batch");
  });

  it("gives a batch larger than the stock exactly the first remaining_amount winners", async () => {
    await createCoupon(database.handle.db, "small-stock", 3);
    const result = await decideClaims(database.handle.db, "small-stock", ["u1", "u2", "u3", "u4", "u5"]);
    expect(result.decisions.map((d) => d.outcome)).toEqual(["created", "created", "created", "sold_out", "sold_out"]);
    expect(result.remaining).toBe(0);
    const rows = await database.sql`select user_id from claims where coupon_name = 'small-stock' order by id`;
    expect(rows.map((r) => r.user_id)).toEqual(["u1", "u2", "u3"]);
  });

  it("checks holders before stock: on a sold-out coupon holders hear ALREADY_CLAIMED, others SOLD_OUT", async () => {
    await createCoupon(database.handle.db, "sold", 1);
    await outcomes("sold", ["first"]);
    expect(await outcomes("sold", ["second", "first", "second"])).toEqual(["sold_out", "already_claimed", "sold_out"]);
  });

  it("answers NOT_FOUND for every claim on an unknown coupon and stores nothing", async () => {
    const result = await decideClaims(database.handle.db, "ghost", ["a", "b"]);
    expect(result).toEqual({ decisions: [{ outcome: "not_found" }, { outcome: "not_found" }], remaining: null });
    expect((await database.sql`select count(*)::int as n from claims where coupon_name = 'ghost'`)[0]?.n).toBe(0);
  });

  it("stamps each winner with claimed_at and only winners", async () => {
    await createCoupon(database.handle.db, "stamped", 1);
    const { decisions } = await decideClaims(database.handle.db, "stamped", ["w", "l"]);
    expect(decisions[0]?.claimedAt).toBeInstanceOf(Date);
    expect(decisions[1]?.claimedAt).toBeUndefined();
  });

  it("matches the one-by-one model on 40 random batches with duplicates and tight stock", async () => {
    let seed = 12345;
    const random = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let round = 0; round < 40; round++) {
      const name = `model-${round}`;
      const stock = 1 + random(8);
      await createCoupon(database.handle.db, name, stock);
      const model = { remaining: stock, holders: new Set<string>() };
      for (let batch = 0; batch < 3; batch++) {
        const users = Array.from({ length: 1 + random(12) }, () => `u${random(10)}`);
        const expected = users.map((user) => modelClaim(model, user));
        expect(await outcomes(name, users)).toEqual(expected);
      }
      const [row] = await database.sql`select remaining_amount from coupons where name = ${name}`;
      expect(row?.remaining_amount).toBe(model.remaining);
    }
  });

  it("serialises concurrent batches from separate connection pools with the advisory lock", async () => {
    await createCoupon(database.handle.db, "contended", 25);
    const config = loadConfig({ DATABASE_URL: database.url, DATABASE_POOL_MAX: "4" });
    const pools = [0, 1, 2].map(() => openPostgres(database.url, config));
    try {
      // 30 batches of 4 in flight at once on 3 pools: 120 claims by 60 users (each twice) for 25 units.
      const batches = Array.from({ length: 30 }, (_, i) => [
        `p${i * 2}`,
        `p${i * 2 + 1}`,
        `p${(i * 2 + 7) % 60}`,
        `p${i * 2}`,
      ]);
      const results = await Promise.all(
        batches.map((users, i) => decideClaims((pools[i % 3] as (typeof pools)[0]).db, "contended", users)),
      );
      const created = results.flatMap((r) => r.decisions).filter((d) => d.outcome === "created").length;
      expect(created).toBe(25);
      await expectStockInvariant(database.sql, "contended");
    } finally {
      await Promise.all(pools.map((p) => p.close()));
    }
  });

  it("decides one claim at a time when something bypassed the lock: the unique violation is ALREADY_CLAIMED", async () => {
    await createCoupon(database.handle.db, "bypassed", 10);
    // A writer that skips the lock holds an uncommitted claim by "x"; the batch waits on the unique
    // index, then fails with a unique violation once that writer commits.
    const intruder = await database.sql.reserve();
    try {
      await intruder`begin`;
      await intruder`insert into claims (user_id, coupon_name) values ('x', 'bypassed')`;
      await intruder`update coupons set remaining_amount = remaining_amount - 1 where name = 'bypassed'`;
      const batch = decideClaims(database.handle.db, "bypassed", ["y", "x", "z"]);
      await Bun.sleep(200);
      await intruder`commit`;
      expect((await batch).decisions.map((d) => d.outcome)).toEqual(["created", "already_claimed", "created"]);
    } finally {
      intruder.release();
    }
    await expectStockInvariant(database.sql, "bypassed");
  });

  it("probes the unique index per user on a coupon created after claims was analysed (plan independent of statistics)", async () => {
    // A table analysed while only an older coupon had claims: the planner believes any other coupon
    // rare, and once tempted to filter a new coupon's claims through (coupon_name, id) per user.
    await createCoupon(database.handle.db, "analysed-old", 100_000);
    await createCoupon(database.handle.db, "fresh-sale", 100_000);
    await database.sql`insert into claims (user_id, coupon_name) select 'o' || g, 'analysed-old' from generate_series(1, 20000) g`;
    await database.sql`analyze claims`;
    await database.sql`insert into claims (user_id, coupon_name) select 'f' || g, 'fresh-sale' from generate_series(1, 20000) g`;
    await database.sql`update coupons set remaining_amount = amount - 20000 where name in ('analysed-old', 'fresh-sale')`;
    // auto_explain on one session of its own reports the plan of every statement the decision runs.
    const plans: string[] = [];
    const session = postgres(database.url, { max: 1, onnotice: (notice) => void plans.push(notice.message ?? "") });
    try {
      await session`load 'auto_explain'`;
      await session`set auto_explain.log_min_duration = 0`;
      await session`set auto_explain.log_nested_statements = on`;
      await session`set client_min_messages = log`;
      const users = Array.from({ length: 256 }, (_, i) => (i % 2 ? `f${i}` : `new${i}`));
      const result = await decideClaims(drizzle(session, { schema }) as never, "fresh-sale", users);
      expect(result.decisions.filter((d) => d.outcome === "already_claimed").length).toBe(128);
      const claimsPlans = plans.filter((plan) => /on claims/.test(plan)).join("\n");
      expect(claimsPlans).toContain("claims_user_id_coupon_name_key");
      expect(claimsPlans).not.toContain("claims_coupon_name_id_idx");
    } finally {
      await session.end();
    }
    await expectStockInvariant(database.sql, "fresh-sale");
  });
});
