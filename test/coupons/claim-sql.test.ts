// decideClaims (claim_batch, claim_release_batch): one batch = the same answers and state as its claims
// and releases applied one by one in order.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { sql } from "drizzle-orm";
import { drizzle } from "drizzle-orm/postgres-js";
import fc from "fast-check";
import postgres from "postgres";
import { loadConfig } from "../../src/config";
import { decideClaims } from "../../src/coupons/claim-sql";
import { createCoupon, updateCoupon } from "../../src/coupons/coupons";
import { openPostgres } from "../../src/db/client";
import * as schema from "../../src/db/schema";
import { createTestDatabase, type TestDatabase } from "../support/database";
import { expectStockInvariant } from "../support/invariant";
import { type ModelCoupon, modelClaim, modelRelease } from "../support/model";

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
    expect(result).toEqual({
      decisions: [
        { outcome: "not_found", remaining: null },
        { outcome: "not_found", remaining: null },
      ],
      remaining: null,
    });
    expect((await database.sql`select count(*)::int as n from claims where coupon_name = 'ghost'`)[0]?.n).toBe(0);
  });

  it("stamps each winner with claimed_at and only winners", async () => {
    await createCoupon(database.handle.db, "stamped", 1);
    const { decisions } = await decideClaims(database.handle.db, "stamped", ["w", "l"]);
    expect(decisions[0]?.decidedAt).toBeInstanceOf(Date);
    expect(decisions[1]?.decidedAt).toBeUndefined();
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

/** One request of a mixed batch: a claim by `user`, or the release of `user`'s claim. */
type Request = { user: string; release: boolean };

/** Decides a mixed batch; one with no release goes to claim_batch like the service sends it. */
const decide = (coupon: string, requests: readonly Request[]) =>
  decideClaims(
    database.handle.db,
    coupon,
    requests.map((r) => r.user),
    requests.map((r) => r.release),
  );

/** What one request does to the model, as [outcome, stock after it]. */
function modelDecide(coupon: ModelCoupon, { user, release }: Request, now = Date.now()): [string, number | null] {
  return [release ? modelRelease(coupon, user) : modelClaim(coupon, user, now), coupon.remaining];
}

/** A coupon as SQL holds it: stock, holders in claim order, and the users released, in release order. */
async function stateOf(coupon: string) {
  const [row] = await database.sql<{ remaining: number; holders: string[]; released: string[] }[]>`
    select c.remaining_amount as remaining,
      (select coalesce(json_agg(user_id order by id), '[]'::json) from claims where coupon_name = c.name) as holders,
      (select coalesce(json_agg(user_id order by id), '[]'::json) from claim_releases where coupon_name = c.name)
        as released
    from coupons c where c.name = ${coupon}`;
  return row;
}

/** Polls until `check` holds; fails after `ms`. */
async function until(check: () => boolean, what: string, ms = 5000): Promise<void> {
  const start = performance.now();
  while (!check()) {
    if (performance.now() - start > ms) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(5);
  }
}

const HOUR = 3_600_000;
type Sale = "open" | "paused" | "not started" | "ended";
/** The change (for updateCoupon) that puts a sale in `sale`, and the same state for the model. */
const saleChange = (sale: Exclude<Sale, "open">) =>
  sale === "paused"
    ? { active: false }
    : sale === "not started"
      ? { startsAt: new Date(Date.now() + HOUR) }
      : { endsAt: new Date(Date.now() - HOUR) };
const modelSale = (sale: Sale): Partial<ModelCoupon> =>
  sale === "paused"
    ? { active: false }
    : sale === "not started"
      ? { startsAt: Date.now() + HOUR }
      : sale === "ended"
        ? { endsAt: Date.now() - HOUR }
        : {};

describe("decideClaims with releases", () => {
  let runs = 0;
  const request = fc.record({ user: fc.nat(6).map((u) => `u${u}`), release: fc.boolean() });

  it("matches the one-by-one model on random mixed batches: every outcome and stock, then the state in SQL", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 4 }),
        fc.array(
          fc.nat(6).map((u) => `u${u}`),
          { maxLength: 5 },
        ),
        fc.constantFrom<Sale>("open", "open", "open", "paused", "not started", "ended"),
        fc.array(fc.array(request, { minLength: 1, maxLength: 10 }), { minLength: 1, maxLength: 4 }),
        async (stock, before, sale, batches) => {
          const name = `mixed-${runs++}`;
          await createCoupon(database.handle.db, name, stock);
          const model: ModelCoupon = { remaining: stock, holders: new Set() };
          if (before.length > 0) {
            const expected = before.map((user) => modelClaim(model, user));
            expect((await outcomes(name, before)).map(String)).toEqual(expected);
          }
          if (sale !== "open") await updateCoupon(database.handle.db, name, saleChange(sale));
          Object.assign(model, modelSale(sale));
          const released: string[] = [];
          for (const batch of batches) {
            const expected = batch.map((r) => {
              const decided = modelDecide(model, r);
              if (decided[0] === "released") released.push(r.user);
              return decided;
            });
            const result = await decide(name, batch);
            expect(result.decisions.map((d): [string, number | null] => [d.outcome, d.remaining])).toEqual(expected);
            expect(result.decisions.map((d) => d.decidedAt !== undefined)).toEqual(
              expected.map(([outcome]) => outcome === "created" || outcome === "released"),
            );
            expect(result.remaining).toBe(model.remaining);
          }
          expect(await stateOf(name)).toEqual({ remaining: model.remaining, holders: [...model.holders], released });
          await expectStockInvariant(database.sql, name);
        },
      ),
      { numRuns: 60 },
    );
  }, 60_000);

  // Known gap: claim_batch gives each decision the stock after the whole batch, not after that claim
  // as ClaimDecision.remaining says. Remove .failing once claim_batch answers the stock per claim.
  it("gives each claim of a claim-only batch the stock right after it (claim_batch)", async () => {
    await createCoupon(database.handle.db, "per-claim-stock", 3);
    const { decisions } = await decideClaims(database.handle.db, "per-claim-stock", ["a", "b", "a", "c", "d"]);
    expect(decisions.map((d) => [d.outcome, d.remaining])).toEqual([
      ["created", 2],
      ["created", 1],
      ["already_claimed", 1],
      ["created", 0],
      ["sold_out", 0],
    ]);
  });

  it("decides a release and claims racing for the last unit from three pools like one of their one-by-one orders", async () => {
    const config = loadConfig({ DATABASE_URL: database.url, DATABASE_POOL_MAX: "2" });
    const pools = [0, 1, 2].map(() => openPostgres(database.url, config));
    let seed = 777;
    const random = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const orders = [
      [0, 1, 2],
      [0, 2, 1],
      [1, 0, 2],
      [1, 2, 0],
      [2, 0, 1],
      [2, 1, 0],
    ];
    const seen = new Set<string>();
    try {
      await Promise.all(pools.map((pool) => pool.db.execute(sql`select 1`)));
      for (let round = 0; round < 30; round++) {
        const name = `last-unit-${round}`;
        const stock = 1 + random(2);
        const holders = Array.from({ length: stock }, (_, i) => `h${i}`);
        await createCoupon(database.handle.db, name, stock);
        await outcomes(name, holders);
        // The release of a holder's claim, a newcomer's claim, and a random third batch over the same users.
        const pool = [...holders, "x", "y"];
        const third = Array.from({ length: 1 + random(3) }, () => ({
          user: pool[random(pool.length)] as string,
          release: random(2) === 0,
        }));
        const batches: Request[][] = [[{ user: "h0", release: true }], [{ user: "x", release: false }], third];
        const results = await Promise.all(
          batches.map((batch, i) =>
            decideClaims(
              (pools[i] as (typeof pools)[0]).db,
              name,
              batch.map((r) => r.user),
              batch.map((r) => r.release),
            ),
          ),
        );
        const actual = results.map((r) => r.decisions.map((d) => [d.outcome, d.remaining]));
        const state = await stateOf(name);
        const explained = orders.filter((order) => {
          const model: ModelCoupon = { remaining: 0, holders: new Set(holders) };
          const released: string[] = [];
          const expected: [string, number | null][][] = [[], [], []];
          for (const i of order)
            expected[i] = (batches[i] as Request[]).map((r) => {
              const decided = modelDecide(model, r);
              if (decided[0] === "released") released.push(r.user);
              return decided;
            });
          return (
            Bun.deepEquals(expected, actual) &&
            Bun.deepEquals(state, { remaining: model.remaining, holders: [...model.holders], released })
          );
        });
        expect({ round, explained: explained.length > 0 }).toEqual({ round, explained: true });
        for (const order of explained) seen.add(order.join(""));
        await expectStockInvariant(database.sql, name);
      }
    } finally {
      await Promise.all(pools.map((p) => p.close()));
    }
    // The batches really raced: more than one order was seen.
    expect(seen.size).toBeGreaterThan(1);
  }, 30_000);

  it.each([
    ["paused", "sale_paused"],
    ["not started", "sale_not_started"],
    ["ended", "sale_ended"],
  ] as const)("releases while the sale is %s, and refuses a re-claim then with %s", async (sale, refusal) => {
    const name = `release-${sale.replace(" ", "-")}`;
    await createCoupon(database.handle.db, name, 2);
    await outcomes(name, ["a", "b"]);
    await updateCoupon(database.handle.db, name, saleChange(sale));
    const mixed = await decide(name, [
      { user: "a", release: true },
      { user: "a", release: false },
      { user: "c", release: false },
      { user: "b", release: true },
      { user: "a", release: true },
    ]);
    expect(mixed.decisions.map((d) => [d.outcome, d.remaining])).toEqual([
      ["released", 1],
      [refusal, 1],
      [refusal, 1],
      ["released", 2],
      ["claim_not_found", 2],
    ]);
    if (refusal === "sale_not_started") expect(mixed.decisions[1]?.opensInMs).toBeGreaterThan(HOUR - 60_000);
    // A claim-only batch (claim_batch) refuses the re-claim the same way.
    expect(await outcomes(name, ["b"])).toEqual([refusal]);
    expect(await stateOf(name)).toEqual({ remaining: 2, holders: [], released: ["a", "b"] });
  });

  it("lets a user released during a pause claim again once the sale resumes, at the end of the claim order", async () => {
    await createCoupon(database.handle.db, "resumed", 2);
    await outcomes("resumed", ["a", "b"]);
    await updateCoupon(database.handle.db, "resumed", { active: false });
    expect((await decide("resumed", [{ user: "a", release: true }])).decisions[0]?.outcome).toBe("released");
    expect(await outcomes("resumed", ["a"])).toEqual(["sale_paused"]);
    await updateCoupon(database.handle.db, "resumed", { active: true });
    expect(await outcomes("resumed", ["a", "c"])).toEqual(["created", "sold_out"]);
    expect(await stateOf("resumed")).toEqual({ remaining: 0, holders: ["b", "a"], released: ["a"] });
  });

  it("notifies coupon_changes once per batch that released anything, never for claims or releases of nothing", async () => {
    const heard: string[] = [];
    const { unlisten } = await database.sql.listen("coupon_changes", (payload) => void heard.push(payload));
    let marks = 0;
    // Notifications arrive in commit order: once a mark sent after a batch is heard, so is all the batch sent.
    const heardAfter = async (run: () => Promise<unknown>) => {
      await run();
      const mark = `mark-${marks++}`;
      await database.sql`select pg_notify('coupon_changes', ${mark})`;
      await until(() => heard.includes(mark), mark);
      return heard.splice(0).filter((payload) => payload !== mark);
    };
    try {
      await createCoupon(database.handle.db, "announced", 3);
      expect(await heardAfter(() => outcomes("announced", ["a", "b", "c", "d"]))).toEqual([]);
      expect(
        await heardAfter(() =>
          decide("announced", [
            { user: "a", release: true },
            { user: "e", release: false },
            { user: "b", release: true },
          ]),
        ),
      ).toEqual(["announced"]);
      expect(
        await heardAfter(() =>
          decide("announced", [
            { user: "a", release: true },
            { user: "f", release: false },
            { user: "nobody", release: true },
          ]),
        ),
      ).toEqual([]);
      expect(await heardAfter(() => decide("ghost", [{ user: "a", release: true }]))).toEqual([]);
      expect(await heardAfter(() => decide("announced", [{ user: "c", release: true }]))).toEqual(["announced"]);
    } finally {
      await unlisten();
    }
  });

  it("records each release with its claim's id, the claim's created_at as claimed_at, and the release's instant", async () => {
    await createCoupon(database.handle.db, "recorded", 3);
    await outcomes("recorded", ["a", "b"]);
    const claimsBefore = await database.sql<{ id: string; user_id: string; created_at: string }[]>`
      select id::text, user_id, created_at::text from claims where coupon_name = 'recorded' order by id`;
    // "c" is claimed and released in the same batch: both at the batch's one instant.
    const { decisions } = await decide("recorded", [
      { user: "a", release: true },
      { user: "c", release: false },
      { user: "c", release: true },
    ]);
    const rows = await database.sql<
      { claim_id: string; user_id: string; coupon_name: string; claimed_at: string; released_at: Date; same: boolean }[]
    >`select claim_id::text, user_id, coupon_name, claimed_at::text, released_at, claimed_at = released_at as same
      from claim_releases where coupon_name = 'recorded' order by id`;
    expect(rows).toHaveLength(2);
    const [a, c] = [...rows] as [(typeof rows)[0], (typeof rows)[0]];
    expect({ ...a, released_at: a.released_at.getTime() }).toEqual({
      claim_id: claimsBefore[0]?.id as string,
      user_id: "a",
      coupon_name: "recorded",
      claimed_at: claimsBefore[0]?.created_at as string,
      released_at: decisions[0]?.decidedAt?.getTime() as number,
      same: false,
    });
    expect(BigInt(c.claim_id)).toBeGreaterThan(BigInt(claimsBefore[1]?.id as string));
    expect([c.user_id, c.same, c.released_at.getTime()]).toEqual(["c", true, decisions[2]?.decidedAt?.getTime() ?? 0]);
    expect(decisions[1]?.decidedAt?.getTime()).toBe(c.released_at.getTime());
    expect([...(await database.sql`select user_id from claims where coupon_name = 'recorded'`)]).toEqual([
      { user_id: "b" },
    ]);
  });
});
