// decideBatch (claim_batch_seq, and with Idempotency-Keys or releases claim_keyed_batch_seq and
// claim_request_batch_seq): one batch = the same answers, state and seqs as its claims and releases
// applied one by one in order; a keyed request's decision is stored with it and given again to the
// same key; the names older replicas call still decide the same way.
import { describe, expect, it } from "bun:test";
import { sql } from "drizzle-orm";
import { drizzle } from "drizzle-orm/postgres-js";
import fc from "fast-check";
import postgres from "postgres";
import { loadConfig } from "../../src/config";
import { type DecidedOutcome, type Rejected, rejections } from "../../src/domain/outcomes";
import { fingerprint } from "../../src/http/idempotency";
import { type BatchRequest, type ClaimDecision, claimSnapshot, decideBatch } from "../../src/store/claims";
import { openPostgres } from "../../src/store/client";
import { createCoupon, updateCoupon } from "../../src/store/coupons";
import * as schema from "../../src/store/schema";
import { changeSale, claimsBy, fenceOf } from "../support/coupons";
import { databaseForSuite } from "../support/database";
import { expectStockInvariant } from "../support/invariant";
import { type ModelCoupon, modelClaim, modelRelease } from "../support/model";
import { until } from "../support/replicas";

const database = databaseForSuite();

const outcomes = async (coupon: string, users: string[]) =>
  (await decideBatch(database.handle.db, coupon, claimsBy(users))).decisions.map((d) => d.outcome);

describe("decideBatch", () => {
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
    const result = await decideBatch(database.handle.db, "small-stock", claimsBy(["u1", "u2", "u3", "u4", "u5"]));
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
    const result = await decideBatch(database.handle.db, "ghost", claimsBy(["a", "b"]));
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
    const { decisions } = await decideBatch(database.handle.db, "stamped", claimsBy(["w", "l"]));
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
        batches.map((users, i) => decideBatch((pools[i % 3] as (typeof pools)[0]).db, "contended", claimsBy(users))),
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
      await intruder`insert into claims (user_id, coupon_name, seq) values ('x', 'bypassed', 1)`;
      await intruder`update coupons set remaining_amount = remaining_amount - 1, last_seq = 1 where name = 'bypassed'`;
      const batch = decideBatch(database.handle.db, "bypassed", claimsBy(["y", "x", "z"]));
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
    const claimed = (prefix: string, coupon: string) =>
      database.sql`insert into claims (user_id, coupon_name, seq)
        select ${prefix} || g, ${coupon}, g from generate_series(1, 20000) g order by g`;
    await claimed("o", "analysed-old");
    await database.sql`analyze claims`;
    await claimed("f", "fresh-sale");
    await database.sql`update coupons set remaining_amount = amount - 20000, last_seq = 20000
      where name in ('analysed-old', 'fresh-sale')`;
    // auto_explain on one session of its own reports the plan of every statement the decision runs.
    const plans: string[] = [];
    const session = postgres(database.url, { max: 1, onnotice: (notice) => void plans.push(notice.message ?? "") });
    try {
      await session`load 'auto_explain'`;
      await session`set auto_explain.log_min_duration = 0`;
      await session`set auto_explain.log_nested_statements = on`;
      await session`set client_min_messages = log`;
      const users = Array.from({ length: 256 }, (_, i) => (i % 2 ? `f${i}` : `new${i}`));
      const result = await decideBatch(drizzle(session, { schema }) as never, "fresh-sale", claimsBy(users));
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

/** `requests` as the service sends them: each release with a fence raised for it (one per batch here). */
async function asSent(coupon: string, requests: readonly Keyed[], db = database.handle.db): Promise<BatchRequest[]> {
  const fence = requests.some((r) => r.release) ? await fenceOf(db, coupon) : undefined;
  return requests.map((r) => ({
    user: r.user,
    ...(r.release ? { release: true, ...(fence && !r.unfenced ? { fence } : {}) } : {}),
    ...(r.key === undefined
      ? {}
      : { idempotency: { key: r.key, fingerprint: fingerprintOf(coupon, r), ttlMs: r.ttlMs ?? HOUR } }),
  }));
}

/** Decides a mixed batch; one with no release goes to claim_batch like the service sends it. */
const decide = async (coupon: string, requests: readonly Request[], db = database.handle.db) =>
  decideBatch(db, coupon, await asSent(coupon, requests, db));

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

/** A coupon for a random batch test: its stock, the users holding it before, and its sale's state. */
const couponArbitraries = [
  fc.integer({ min: 1, max: 4 }),
  fc.array(
    fc.nat(6).map((u) => `u${u}`),
    { maxLength: 5 },
  ),
  fc.constantFrom<Sale>("open", "open", "open", "paused", "not started", "ended"),
] as const;

describe("decideBatch with releases", () => {
  let runs = 0;
  const request = fc.record({ user: fc.nat(6).map((u) => `u${u}`), release: fc.boolean() });

  it("matches the one-by-one model on random mixed batches: every outcome, stock and seq, then the state in SQL", async () => {
    await fc.assert(
      fc.asyncProperty(
        ...couponArbitraries,
        fc.array(fc.array(request, { minLength: 1, maxLength: 10 }), { minLength: 1, maxLength: 4 }),
        async (stock, before, sale, batches) => {
          const name = `mixed-${runs++}`;
          await createCoupon(database.handle.db, name, stock);
          const model: ModelCoupon = { remaining: stock, holders: new Set() };
          if (before.length > 0) {
            const expected = before.map((user) => modelClaim(model, user));
            expect((await outcomes(name, before)).map(String)).toEqual(expected);
          }
          if (sale !== "open") await changeSale(database.handle.db, name, saleChange(sale));
          Object.assign(model, modelSale(sale));
          const released: string[] = [];
          for (const batch of batches) {
            const seqs: (number | undefined)[] = [];
            const expected = batch.map((r) => {
              const decided = modelDecide(model, r);
              if (decided[0] === "released") released.push(r.user);
              seqs.push(decided[0] === "created" ? model.lastSeq : undefined);
              return decided;
            });
            const result = await decide(name, batch);
            expect(result.decisions.map((d): [string, number | null] => [d.outcome, d.remaining])).toEqual(expected);
            expect(result.decisions.map((d) => d.seq)).toEqual(seqs);
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
    const { decisions } = await decideBatch(database.handle.db, "per-claim-stock", claimsBy(["a", "b", "a", "c", "d"]));
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
        // Each sent 0–2 ms apart in a random order: a statement is one round trip now, so batches sent in
        // the same tick would reach the lock in the order they were sent, round after round.
        const results = await Promise.all(
          batches.map(async (batch, i) => {
            await Bun.sleep(random(3));
            return decide(name, batch, (pools[i] as (typeof pools)[0]).db);
          }),
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
    await changeSale(database.handle.db, name, saleChange(sale));
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
    await changeSale(database.handle.db, "resumed", { active: false });
    expect((await decide("resumed", [{ user: "a", release: true }])).decisions[0]?.outcome).toBe("released");
    expect(await outcomes("resumed", ["a"])).toEqual(["sale_paused"]);
    await changeSale(database.handle.db, "resumed", { active: true });
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
      // Each release's fence notifies too, before it: fenced first, then only the batch is listened to.
      const batch = async (coupon: string, requests: Request[]) => {
        const sent = await asSent(coupon, requests);
        await heardAfter(async () => {}); // the fence's own notification, heard and set aside
        return heardAfter(() => decideBatch(database.handle.db, coupon, sent));
      };
      const [a, b, c, e, f] = ["a", "b", "c", "e", "f"].map((user) => ({ user, release: false }));
      const released = (r: Request) => ({ ...r, release: true });
      expect(await batch("announced", [released(a as Request), e as Request, released(b as Request)])).toEqual([
        "announced",
      ]);
      expect(
        await batch("announced", [released(a as Request), f as Request, { user: "nobody", release: true }]),
      ).toEqual([]);
      expect(await batch("ghost", [{ user: "a", release: true }])).toEqual([]);
      expect(await batch("announced", [released(c as Request)])).toEqual(["announced"]);
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

/** One request of a keyed batch: a claim (or release) by `user`, with an Idempotency-Key or none. */
type Keyed = { user: string; release?: boolean; key?: string; fp?: string; ttlMs?: number; unfenced?: true };

const CLAIM_ROUTE = "POST /api/coupons/claim";
const RELEASE_ROUTE = "DELETE /api/coupons/{name}/claims/{user_id}";
/** The fingerprint the service gives `request` on `coupon`, unless the request names its own. */
const fingerprintOf = (coupon: string, request: Keyed) =>
  request.fp ?? fingerprint(request.release ? RELEASE_ROUTE : CLAIM_ROUTE, [coupon, request.user]);

/** Decides a keyed batch as the service sends it. */
const decideKeyed = async (coupon: string, requests: readonly Keyed[], db = database.handle.db) =>
  decideBatch(db, coupon, await asSent(coupon, requests, db));

/** A decision as compared across paths: outcome, stock after it, whether it has an instant, replayed. */
const shape = (d: ClaimDecision) => [d.outcome, d.remaining, d.decidedAt !== undefined, d.replayed === true];

interface KeyRow {
  fingerprint: string;
  outcome: string | null;
  decided_at: Date | null;
  remaining: number | null;
  ttl_ms: number;
  live: boolean;
}

/** The row stored under `key`, or undefined. */
async function keyRow(key: string): Promise<KeyRow | undefined> {
  const [row] = await database.sql<KeyRow[]>`
    select fingerprint, outcome, decided_at, remaining,
      (extract(epoch from expires_at - created_at) * 1000)::float8 as ttl_ms, expires_at > now() as live
    from idempotency_keys where key = ${key}`;
  return row;
}

const count = async (table: "claims" | "claim_releases", coupon: string, user: string) =>
  (
    await database.sql<{ n: number }[]>`select count(*)::int as n from ${database.sql(table)}
      where coupon_name = ${coupon} and user_id = ${user}`
  )[0]?.n;

let keySerial = 0;
/** A key no other test uses. */
const newKey = (label: string) => `${label}-${keySerial++}`;

describe("decideBatch with Idempotency-Keys, claim-only (claim_keyed_batch)", () => {
  it("stores each new key's outcome, decided_at and the stock after its request, and nothing for unkeyed ones", async () => {
    await createCoupon(database.handle.db, "kb-store", 3);
    await outcomes("kb-store", ["h"]);
    const [k1, k2, k3, k4] = [newKey("store"), newKey("store"), newKey("store"), newKey("store")];
    const { decisions } = await decideKeyed("kb-store", [
      { user: "a", key: k1 },
      { user: "x" },
      { user: "b", key: k2 },
      { user: "h", key: k3 },
      { user: "c", key: k4 },
    ]);
    expect(decisions.map(shape)).toEqual([
      ["created", 1, true, false],
      ["created", 0, true, false],
      ["sold_out", 0, false, false],
      ["already_claimed", 0, false, false],
      ["sold_out", 0, false, false],
    ]);
    const [claimedAt] = await database.sql<{ created_at: Date }[]>`
      select created_at from claims where coupon_name = 'kb-store' and user_id = 'a'`;
    expect(decisions[0]?.decidedAt?.getTime()).toBe(claimedAt?.created_at.getTime() as number);
    expect(await keyRow(k1)).toEqual({
      fingerprint: fingerprint(CLAIM_ROUTE, ["kb-store", "a"]),
      outcome: "created",
      decided_at: claimedAt?.created_at as Date,
      remaining: 1,
      ttl_ms: HOUR,
      live: true,
    });
    expect(await keyRow(k2)).toMatchObject({ outcome: "sold_out", decided_at: null, remaining: 0 });
    expect(await keyRow(k3)).toMatchObject({ outcome: "already_claimed", decided_at: null, remaining: 0 });
    expect(await keyRow(k4)).toMatchObject({ outcome: "sold_out", decided_at: null, remaining: 0 });
    const [stored] = await database.sql<{ n: number }[]>`
      select count(*)::int as n from idempotency_keys where key like 'store-%'`;
    expect(stored?.n).toBe(4);
  });

  it("replays a later batch with the same key and fingerprint: same decision and decided_at, no new claim, stock unchanged", async () => {
    await createCoupon(database.handle.db, "kb-replay", 1);
    const [won, lost] = [newKey("replay"), newKey("replay")];
    const first = await decideKeyed("kb-replay", [
      { user: "a", key: won },
      { user: "b", key: lost },
    ]);
    expect(first.decisions.map(shape)).toEqual([
      ["created", 0, true, false],
      ["sold_out", 0, false, false],
    ]);
    // Stock comes back, so deciding "b" again would now win: the replay must give the stored answer.
    await decide("kb-replay", [{ user: "a", release: true }]);
    await outcomes("kb-replay", ["a"]);
    await decide("kb-replay", [{ user: "a", release: true }]);
    const again = await decideKeyed("kb-replay", [
      { user: "b", key: lost },
      { user: "a", key: won },
    ]);
    expect(again.decisions.map(shape)).toEqual([
      ["sold_out", 0, false, true],
      ["created", 0, true, true],
    ]);
    expect(again.decisions[1]?.decidedAt?.getTime()).toBe(first.decisions[0]?.decidedAt?.getTime() as number);
    expect(again.remaining).toBeNull();
    expect(await stateOf("kb-replay")).toEqual({ remaining: 1, holders: [], released: ["a", "a"] });
    expect([await count("claims", "kb-replay", "a"), await count("claims", "kb-replay", "b")]).toEqual([0, 0]);
  });

  it("answers IDEMPOTENCY_KEY_REUSED to a key used with another fingerprint, applies nothing, and keeps the stored row", async () => {
    await createCoupon(database.handle.db, "kb-reused", 5);
    await createCoupon(database.handle.db, "kb-reused-other", 5);
    const [key, other] = [newKey("reused"), newKey("reused")];
    await decideKeyed("kb-reused", [{ user: "a", key }]);
    const before = await keyRow(key);
    const { decisions } = await decideKeyed("kb-reused", [
      { user: "c" },
      { user: "b", key },
      { user: "d", key: other },
    ]);
    expect(decisions.map((d) => d.outcome)).toEqual(["created", "idempotency_key_reused", "created"]);
    expect([decisions[0]?.remaining, decisions[2]?.remaining]).toEqual([3, 2]);
    expect(decisions[1]?.replayed).toBeUndefined();
    // The same user on another coupon is another request too.
    const elsewhere = await decideKeyed("kb-reused-other", [{ user: "a", key }]);
    expect(elsewhere.decisions.map((d) => d.outcome)).toEqual(["idempotency_key_reused"]);
    expect(await stateOf("kb-reused")).toEqual({ remaining: 2, holders: ["a", "c", "d"], released: [] });
    expect(await stateOf("kb-reused-other")).toEqual({ remaining: 5, holders: [], released: [] });
    expect(await keyRow(key)).toEqual(before);
  });

  it("gives a key repeated in one batch its first copy's decision, replayed; another fingerprint under it is REUSED", async () => {
    await createCoupon(database.handle.db, "kb-twice", 1);
    const [key, split] = [newKey("twice"), newKey("twice")];
    const { decisions } = await decideKeyed("kb-twice", [{ user: "a", key }, { user: "x" }, { user: "a", key }]);
    expect(decisions.map(shape)).toEqual([
      ["created", 0, true, false],
      ["sold_out", 0, false, false],
      ["created", 0, true, true],
    ]);
    expect(decisions[2]?.decidedAt?.getTime()).toBe(decisions[0]?.decidedAt?.getTime() as number);
    expect(await count("claims", "kb-twice", "a")).toBe(1);
    const mixed = await decideKeyed("kb-twice", [
      { user: "b", key: split },
      { user: "c", key: split },
    ]);
    expect(mixed.decisions.map((d) => d.outcome)).toEqual(["sold_out", "idempotency_key_reused"]);
    expect(await keyRow(split)).toMatchObject({ fingerprint: fingerprint(CLAIM_ROUTE, ["kb-twice", "b"]) });
  });

  it.each([
    ["paused", "sale_paused", { active: true }],
    ["not started", "sale_not_started", { startsAt: null }],
  ] as const)(
    "answers a sale %s with %s without storing the key, so the same key executes once the sale opens",
    async (sale, refusal, open) => {
      const name = `kb-${sale.replace(" ", "-")}`;
      await createCoupon(database.handle.db, name, 2);
      await changeSale(database.handle.db, name, saleChange(sale));
      const key = newKey(name);
      const refused = await decideKeyed(name, [
        { user: "a", key },
        { user: "a", key },
      ]);
      expect(refused.decisions.map(shape)).toEqual([
        [refusal, 2, false, false],
        [refusal, 2, false, false],
      ]);
      if (refusal === "sale_not_started") expect(refused.decisions[0]?.opensInMs).toBeGreaterThan(HOUR - 60_000);
      expect(await keyRow(key)).toBeUndefined();
      await changeSale(database.handle.db, name, open);
      const opened = await decideKeyed(name, [{ user: "a", key }]);
      expect(opened.decisions.map(shape)).toEqual([["created", 1, true, false]]);
      expect(await keyRow(key)).toMatchObject({ outcome: "created", remaining: 1 });
    },
  );

  it("treats a key whose row has expired as new: the row is replaced and the request executes", async () => {
    await createCoupon(database.handle.db, "kb-expired", 5);
    const key = newKey("expired");
    await decideKeyed("kb-expired", [{ user: "a", key }]);
    await database.sql`update idempotency_keys set expires_at = now() - interval '1 second' where key = ${key}`;
    // Another request under the expired key: executed, not REUSED.
    const other = await decideKeyed("kb-expired", [{ user: "b", key }]);
    expect(other.decisions.map(shape)).toEqual([["created", 3, true, false]]);
    expect(await keyRow(key)).toMatchObject({
      fingerprint: fingerprint(CLAIM_ROUTE, ["kb-expired", "b"]),
      outcome: "created",
      remaining: 3,
      live: true,
    });
    // The same request again under the expired key: decided again, not replayed.
    await database.sql`update idempotency_keys set expires_at = now() - interval '1 second' where key = ${key}`;
    const same = await decideKeyed("kb-expired", [{ user: "b", key }]);
    expect(same.decisions.map(shape)).toEqual([["already_claimed", 3, false, false]]);
    expect(await keyRow(key)).toMatchObject({ outcome: "already_claimed", live: true });
  });
});

describe("decideBatch with releases and Idempotency-Keys (claim_request_batch)", () => {
  it("stores each keyed release's and claim's outcome, decided_at and the stock after it", async () => {
    await createCoupon(database.handle.db, "rb-store", 3);
    await outcomes("rb-store", ["a", "b"]);
    const [k1, k2, k3, k4] = [newKey("rstore"), newKey("rstore"), newKey("rstore"), newKey("rstore")];
    const { decisions } = await decideKeyed("rb-store", [
      { user: "a", release: true, key: k1 },
      { user: "c", key: k2 },
      { user: "d", key: k3 },
      { user: "z", release: true, key: k4 },
      { user: "e" },
    ]);
    expect(decisions.map(shape)).toEqual([
      ["released", 2, true, false],
      ["created", 1, true, false],
      ["created", 0, true, false],
      ["claim_not_found", 0, false, false],
      ["sold_out", 0, false, false],
    ]);
    const [release] = await database.sql<{ released_at: Date }[]>`
      select released_at from claim_releases where coupon_name = 'rb-store' and user_id = 'a'`;
    expect(await keyRow(k1)).toEqual({
      fingerprint: fingerprint(RELEASE_ROUTE, ["rb-store", "a"]),
      outcome: "released",
      decided_at: release?.released_at as Date,
      remaining: 2,
      ttl_ms: HOUR,
      live: true,
    });
    expect(decisions[0]?.decidedAt?.getTime()).toBe(release?.released_at.getTime() as number);
    expect(await keyRow(k2)).toMatchObject({ outcome: "created", remaining: 1 });
    expect(await keyRow(k3)).toMatchObject({ outcome: "created", remaining: 0 });
    expect(await keyRow(k4)).toMatchObject({ outcome: "claim_not_found", decided_at: null, remaining: 0 });
  });

  it("replays a release: same released_at and remaining_amount, no second release row, the re-claim kept", async () => {
    await createCoupon(database.handle.db, "rb-replay", 2);
    await outcomes("rb-replay", ["a", "b"]);
    const key = newKey("rreplay");
    const first = await decideKeyed("rb-replay", [{ user: "a", release: true, key }]);
    expect(first.decisions.map(shape)).toEqual([["released", 1, true, false]]);
    await outcomes("rb-replay", ["a"]);
    const again = await decideKeyed("rb-replay", [
      { user: "a", release: true, key },
      { user: "a", release: true, key },
    ]);
    expect(again.decisions.map(shape)).toEqual([
      ["released", 1, true, true],
      ["released", 1, true, true],
    ]);
    for (const d of again.decisions)
      expect(d.decidedAt?.getTime()).toBe(first.decisions[0]?.decidedAt?.getTime() as number);
    expect(await count("claim_releases", "rb-replay", "a")).toBe(1);
    expect(await stateOf("rb-replay")).toEqual({ remaining: 0, holders: ["b", "a"], released: ["a"] });
  });

  it("answers IDEMPOTENCY_KEY_REUSED to a release under a key used for another release or for a claim, applying nothing", async () => {
    await createCoupon(database.handle.db, "rb-reused", 3);
    await outcomes("rb-reused", ["a", "b"]);
    const [released, claimed] = [newKey("rreused"), newKey("rreused")];
    await decideKeyed("rb-reused", [
      { user: "a", release: true, key: released },
      { user: "c", key: claimed },
    ]);
    const { decisions } = await decideKeyed("rb-reused", [
      { user: "b", release: true, key: released },
      { user: "c", release: true, key: claimed },
    ]);
    expect(decisions.map((d) => d.outcome)).toEqual(["idempotency_key_reused", "idempotency_key_reused"]);
    expect(decisions.map((d) => d.replayed)).toEqual([undefined, undefined]);
    expect(await stateOf("rb-reused")).toEqual({ remaining: 1, holders: ["b", "c"], released: ["a"] });
    expect(await keyRow(claimed)).toMatchObject({ fingerprint: fingerprint(CLAIM_ROUTE, ["rb-reused", "c"]) });
  });

  it("gives a key repeated in one mixed batch its first copy's decision, replayed", async () => {
    await createCoupon(database.handle.db, "rb-twice", 1);
    await outcomes("rb-twice", ["a"]);
    const [release, claim] = [newKey("rtwice"), newKey("rtwice")];
    const { decisions } = await decideKeyed("rb-twice", [
      { user: "a", release: true, key: release },
      { user: "b", key: claim },
      { user: "a", release: true, key: release },
      { user: "b", key: claim },
    ]);
    expect(decisions.map(shape)).toEqual([
      ["released", 1, true, false],
      ["created", 0, true, false],
      ["released", 1, true, true],
      ["created", 0, true, true],
    ]);
    expect(decisions[2]?.decidedAt?.getTime()).toBe(decisions[0]?.decidedAt?.getTime() as number);
    expect(decisions[3]?.decidedAt?.getTime()).toBe(decisions[1]?.decidedAt?.getTime() as number);
    expect(await stateOf("rb-twice")).toEqual({ remaining: 0, holders: ["b"], released: ["a"] });
  });

  it.each([
    ["paused", "sale_paused", { active: true }],
    ["not started", "sale_not_started", { startsAt: null }],
  ] as const)(
    "answers a claim in a batch with a release while the sale is %s with %s, storing no key",
    async (sale, refusal, open) => {
      const name = `rb-${sale.replace(" ", "-")}`;
      await createCoupon(database.handle.db, name, 2);
      await outcomes(name, ["h"]);
      await changeSale(database.handle.db, name, saleChange(sale));
      const [claim, release] = [newKey(name), newKey(name)];
      const refused = await decideKeyed(name, [
        { user: "h", release: true, key: release },
        { user: "a", key: claim },
        { user: "a", key: claim },
      ]);
      expect(refused.decisions.map(shape)).toEqual([
        ["released", 2, true, false],
        [refusal, 2, false, false],
        [refusal, 2, false, false],
      ]);
      expect(await keyRow(claim)).toBeUndefined();
      expect(await keyRow(release)).toMatchObject({ outcome: "released" });
      await changeSale(database.handle.db, name, open);
      const opened = await decideKeyed(name, [
        { user: "a", key: claim },
        { user: "nobody", release: true },
      ]);
      expect(opened.decisions.map(shape)).toEqual([
        ["created", 1, true, false],
        ["claim_not_found", 1, false, false],
      ]);
      expect(await keyRow(claim)).toMatchObject({ outcome: "created", remaining: 1 });
    },
  );

  it("treats a release's expired key as new: the row is replaced and the request executes", async () => {
    await createCoupon(database.handle.db, "rb-expired", 3);
    await outcomes("rb-expired", ["a", "b"]);
    const key = newKey("rexpired");
    await decideKeyed("rb-expired", [{ user: "a", release: true, key }]);
    await database.sql`update idempotency_keys set expires_at = now() - interval '1 second' where key = ${key}`;
    const other = await decideKeyed("rb-expired", [{ user: "b", release: true, key }]);
    expect(other.decisions.map(shape)).toEqual([["released", 3, true, false]]);
    expect(await keyRow(key)).toMatchObject({
      fingerprint: fingerprint(RELEASE_ROUTE, ["rb-expired", "b"]),
      outcome: "released",
      remaining: 3,
      live: true,
    });
    expect(await stateOf("rb-expired")).toEqual({ remaining: 3, holders: [], released: ["a", "b"] });
  });
});

describe("decideBatch with Idempotency-Keys, against the unkeyed path", () => {
  let runs = 0;
  const request = fc.record({ user: fc.nat(6).map((u) => `u${u}`), release: fc.boolean(), keyed: fc.boolean() });

  it.each([
    ["claim-only batches (claim_keyed_batch)", false],
    ["batches with releases (claim_request_batch)", true],
  ] as const)(
    "decides fresh keyed requests mixed with unkeyed ones exactly like the unkeyed path, in %s",
    async (_, withReleases) => {
      await fc.assert(
        fc.asyncProperty(
          ...couponArbitraries,
          fc.array(fc.array(request, { minLength: 1, maxLength: 10 }), { minLength: 1, maxLength: 3 }),
          async (stock, before, sale, batches) => {
            const run = runs++;
            const [keyed, plain] = [`fresh-keyed-${run}`, `fresh-plain-${run}`];
            for (const name of [keyed, plain]) {
              await createCoupon(database.handle.db, name, stock);
              if (before.length > 0) await outcomes(name, before);
              if (sale !== "open") await changeSale(database.handle.db, name, saleChange(sale));
            }
            for (const batch of batches) {
              const requests: Keyed[] = batch.map((r) => ({
                user: r.user,
                release: withReleases && r.release,
                ...(r.keyed ? { key: newKey(keyed) } : {}),
              }));
              const withKeys = await decideKeyed(keyed, requests);
              const without = await decide(
                plain,
                requests.map((r) => ({ user: r.user, release: r.release === true })),
              );
              expect(withKeys.decisions.map(shape)).toEqual(without.decisions.map(shape));
              expect(withKeys.decisions.map((d) => d.seq)).toEqual(without.decisions.map((d) => d.seq));
              expect(withKeys.decisions.map((d) => d.opensInMs !== undefined)).toEqual(
                without.decisions.map((d) => d.opensInMs !== undefined),
              );
              expect(withKeys.remaining).toBe(without.remaining);
              // Each keyed request's decision is stored, but for those that invite a retry.
              for (const [i, r] of requests.entries()) {
                if (r.key === undefined) continue;
                const decision = withKeys.decisions[i] as ClaimDecision;
                const row = await keyRow(r.key);
                if (decision.outcome === "sale_paused" || decision.outcome === "sale_not_started")
                  expect(row).toBeUndefined();
                else expect(row).toMatchObject({ outcome: decision.outcome, remaining: decision.remaining });
              }
            }
            const [a, b] = [await stateOf(keyed), await stateOf(plain)];
            expect(a).toEqual(b as NonNullable<typeof b>);
            await expectStockInvariant(database.sql, keyed);
          },
        ),
        { numRuns: 40 },
      );
    },
    60_000,
  );
});

/** A reserved connection's transaction, left open until commit or rollback. */
type Reserved = Awaited<ReturnType<postgres.Sql["reserve"]>>;

/** The batch statement a raw session sends, as decideBatch would for one keyed request. */
function rawBatch(session: Reserved, coupon: string, request: Keyed & { key: string }) {
  const fp = fingerprintOf(coupon, request);
  return request.release
    ? session`select outcome from claim_request_batch(${coupon}, array[true]::boolean[], array[${request.user}]::text[],
        array[${request.key}]::text[], array[${fp}]::text[], ${HOUR}::float8)`
    : session`select outcome from claim_keyed_batch(${coupon}, array[${request.user}]::text[],
        array[${request.key}]::text[], array[${fp}]::text[], ${HOUR}::float8)`;
}

/** How many sessions of this database are waiting for a lock in a claim statement. */
const waitingInBatches = async () =>
  (
    await database.sql<{ n: number }[]>`select count(*)::int as n from pg_stat_activity
      where datname = current_database() and wait_event_type = 'Lock' and query like '%claim_%batch%(%'`
  )[0]?.n ?? 0;

describe("Idempotency-Keys across transactions", () => {
  it.each([
    ["claims (claim_keyed_batch)", false],
    ["releases (claim_request_batch)", true],
  ] as const)(
    "lets exactly one of two transactions on two coupons apply a key both take, for %s: the other waits, then REUSED",
    async (label, release) => {
      const [first, second] = [`cross-1-${release}`, `cross-2-${release}`];
      for (const name of [first, second]) {
        await createCoupon(database.handle.db, name, 3);
        await outcomes(name, ["a"]);
      }
      // A release of a holder, or a claim by a newcomer: applied, either changes the coupon.
      const user = release ? "a" : "n";
      const [key, own] = [newKey("cross"), newKey("cross")];
      const session = await database.sql.reserve();
      try {
        await session`begin`;
        expect((await rawBatch(session, first, { user, release, key }))[0]?.outcome).toBe(
          release ? "released" : "created",
        );
        let settled = false;
        // With the shared key, an unkeyed claim and a claim under a key of its own: those two apply once.
        const other = decideKeyed(second, [{ user, release, key }, { user: "b" }, { user: "c", key: own }]).finally(
          () => {
            settled = true;
          },
        );
        await until(async () => (await waitingInBatches()) === 1, `the ${label} on ${second} waiting for the key`);
        expect(settled).toBe(false);
        await session`commit`;
        expect((await other).decisions.map((d) => d.outcome)).toEqual(["idempotency_key_reused", "created", "created"]);
      } finally {
        await session`rollback`.catch(() => {});
        session.release();
      }
      expect(await keyRow(key)).toMatchObject({ fingerprint: fingerprintOf(first, { user, release }) });
      expect(await keyRow(own)).toMatchObject({ outcome: "created", remaining: 0 });
      expect(await stateOf(second)).toEqual({ remaining: 0, holders: ["a", "b", "c"], released: [] });
      expect(await stateOf(first)).toEqual(
        release ? { remaining: 3, holders: [], released: ["a"] } : { remaining: 1, holders: ["a", "n"], released: [] },
      );
      await expectStockInvariant(database.sql, second);
    },
  );

  it("lets the waiting transaction apply the key when the one holding it rolls back", async () => {
    await createCoupon(database.handle.db, "cross-rollback-1", 2);
    await createCoupon(database.handle.db, "cross-rollback-2", 2);
    const key = newKey("cross-rollback");
    const session = await database.sql.reserve();
    try {
      await session`begin`;
      await rawBatch(session, "cross-rollback-1", { user: "a", key });
      const other = decideKeyed("cross-rollback-2", [{ user: "a", key }]);
      await until(async () => (await waitingInBatches()) === 1, "the claim waiting for the key");
      await session`rollback`;
      expect((await other).decisions.map((d) => d.outcome)).toEqual(["created"]);
    } finally {
      session.release();
    }
    expect(await keyRow(key)).toMatchObject({ fingerprint: fingerprint(CLAIM_ROUTE, ["cross-rollback-2", "a"]) });
    expect(await stateOf("cross-rollback-1")).toEqual({ remaining: 2, holders: [], released: [] });
  });

  it.each([
    ["claim_keyed_batch", false],
    ["claim_request_batch", true],
  ] as const)(
    "never deadlocks two batches (%s) taking overlapping keys in opposite orders: both complete",
    async (_, withRelease) => {
      const [x, y] = [`order-x-${withRelease}`, `order-y-${withRelease}`];
      await createCoupon(database.handle.db, x, 100);
      await createCoupon(database.handle.db, y, 100);
      const keys = Array.from({ length: 20 }, (_, i) => `order-${withRelease}-k${String(i).padStart(2, "0")}`);
      const batch = (order: string[]): Keyed[] => [
        ...order.map((key) => ({ user: `u-${key}`, key })),
        ...(withRelease ? [{ user: "nobody", release: true }] : []),
      ];
      // A third transaction holds a key in the middle: each batch has taken what comes before it in its
      // own order when it stops there, so taking keys in arrival order would end in a deadlock.
      const holder = await database.sql.reserve();
      try {
        await holder`begin`;
        await holder`select idempotency_take(array[${keys[10] as string}]::text[], array['held']::text[],
        clock_timestamp(), ${HOUR}::float8)`;
        const results = Promise.allSettled([decideKeyed(x, batch(keys)), decideKeyed(y, batch(keys.toReversed()))]);
        await until(async () => (await waitingInBatches()) === 2, "both batches waiting for keys");
        await holder`rollback`;
        const [first, second] = await results;
        expect([first.status, second.status]).toEqual(["fulfilled", "fulfilled"]);
        const ofKey = (result: typeof first, order: string[]) =>
          new Map(
            result.status === "fulfilled" ? order.map((key, i) => [key, result.value.decisions[i]?.outcome]) : [],
          );
        const [onX, onY] = [ofKey(first, keys), ofKey(second, keys.toReversed())];
        for (const key of keys)
          expect([onX.get(key), onY.get(key)].sort()).toEqual(["created", "idempotency_key_reused"]);
      } finally {
        await holder`rollback`.catch(() => {});
        holder.release();
      }
      await expectStockInvariant(database.sql, x);
      await expectStockInvariant(database.sql, y);
    },
    20_000,
  );
});

/** How to get each outcome the SQL decides for a request under a fresh key. */
interface Scenario {
  setup(coupon: string): Promise<unknown>;
  request: Keyed;
  /** The path that can decide it: a claim-only batch, a batch with a release, or either. */
  paths: readonly ("keyed" | "request")[];
}

const both = ["keyed", "request"] as const;
/** A claim on a one-unit coupon whose sale is `sale`. */
const closedSale = (sale: Exclude<Sale, "open">): Scenario => ({
  setup: async (c) => {
    await createCoupon(database.handle.db, c, 1);
    await changeSale(database.handle.db, c, saleChange(sale));
  },
  request: { user: "a" },
  paths: both,
});
const scenarios = {
  created: { setup: (c) => createCoupon(database.handle.db, c, 1), request: { user: "a" }, paths: both },
  released: {
    setup: async (c) => {
      await createCoupon(database.handle.db, c, 1);
      await outcomes(c, ["a"]);
    },
    request: { user: "a", release: true },
    paths: ["request"],
  },
  claim_not_found: {
    setup: (c) => createCoupon(database.handle.db, c, 1),
    request: { user: "a", release: true },
    paths: ["request"],
  },
  already_claimed: {
    setup: async (c) => {
      await createCoupon(database.handle.db, c, 2);
      await outcomes(c, ["a"]);
    },
    request: { user: "a" },
    paths: both,
  },
  sold_out: {
    setup: async (c) => {
      await createCoupon(database.handle.db, c, 1);
      await outcomes(c, ["h"]);
    },
    request: { user: "a" },
    paths: both,
  },
  sale_paused: closedSale("paused"),
  sale_not_started: closedSale("not started"),
  sale_ended: closedSale("ended"),
  not_found: { setup: async () => {}, request: { user: "a" }, paths: both },
  // A release whose fence is missing (or expired): refused, nothing applied.
  expired: {
    setup: async (c) => {
      await createCoupon(database.handle.db, c, 1);
      await outcomes(c, ["a"]);
    },
    request: { user: "a", release: true, unfenced: true },
    paths: ["request"],
  },
  // The key was first used by another request ("h"), whose row stays.
  idempotency_key_reused: {
    setup: (c) => createCoupon(database.handle.db, c, 2),
    request: { user: "a", fp: "another request's fingerprint" },
    paths: both,
  },
} satisfies Record<DecidedOutcome, Scenario>;

describe("outcomes.ts retry flags against what the SQL stores", () => {
  const cases = Object.entries(scenarios).flatMap(([outcome, scenario]) =>
    scenario.paths.map((path) => [outcome as DecidedOutcome, path, scenario as Scenario] as const),
  );

  it.each(cases)(
    "stores %s (%s path) under its key iff rejections does not mark it retry",
    async (outcome, path, scenario) => {
      const coupon = `retry-${outcome}-${path}`;
      await scenario.setup(coupon);
      const key = newKey(coupon);
      if (outcome === "idempotency_key_reused") await decideKeyed(coupon, [{ user: "h", key }]);
      const before = await keyRow(key);
      // A batch with a release goes to claim_request_batch; "nobody" holds nothing, so it changes nothing.
      const extra: Keyed[] = path === "request" && !scenario.request.release ? [{ user: "nobody", release: true }] : [];
      const { decisions } = await decideKeyed(coupon, [{ ...scenario.request, key }, ...extra]);
      expect(decisions[0]?.outcome).toBe(outcome);
      const retry = outcome in rejections && rejections[outcome as Rejected].retry === true;
      const row = await keyRow(key);
      if (outcome === "idempotency_key_reused") {
        // Never stored over the request that holds the key.
        expect(retry).toBe(false);
        expect(row).toEqual(before as KeyRow);
      } else if (retry) expect(row).toBeUndefined();
      else
        expect(row).toMatchObject({
          fingerprint: fingerprintOf(coupon, scenario.request),
          outcome,
          remaining: decisions[0]?.remaining ?? null,
        });
    },
  );

  it("covers every outcome the SQL decides with a scenario", () => {
    const decided: readonly DecidedOutcome[] = [
      "created",
      "released",
      "claim_not_found",
      "already_claimed",
      "sold_out",
      "sale_paused",
      "sale_not_started",
      "sale_ended",
      "not_found",
      "idempotency_key_reused",
      "expired",
    ];
    expect(Object.keys(scenarios).sort()).toEqual([...decided].sort());
  });
});

/** Marks `key`'s stored decision as expired (its IDEMPOTENCY_TTL passed). */
const expire = (key: string) =>
  database.sql`update idempotency_keys set expires_at = clock_timestamp() - interval '1 second' where key = ${key}`;

/** The sweep of expired keys, as startKeyCleanup sends it (store/keys.ts). */
const sweep = () =>
  database.sql`delete from idempotency_keys where key in (
    select key from idempotency_keys where expires_at <= clock_timestamp() limit ${1000} for update skip locked)`;

describe("an expired key taken by two transactions (claim_keyed_batch)", () => {
  it("never deletes the decision another transaction stored under it while this one waited: applied once", async () => {
    await createCoupon(database.handle.db, "retaken-1", 3);
    await createCoupon(database.handle.db, "retaken-2", 3);
    const key = newKey("retaken");
    await decideKeyed("retaken-1", [{ user: "old", key }]);
    await expire(key);
    const createFingerprint = fingerprint("POST /api/coupons", ["retaken-3", 3, null, null]);
    const session = await database.sql.reserve();
    try {
      // A create re-takes the expired key (createCoupon's takeKey: the row is replaced, and locked).
      await session`begin`;
      await session`select idempotency_take(array[${key}]::text[], array[${createFingerprint}]::text[],
        clock_timestamp(), ${HOUR}::float8)`;
      const other = decideKeyed("retaken-2", [{ user: "n", key }]);
      await until(async () => (await waitingInBatches()) === 1, "the claim waiting for the key's row");
      await session`update idempotency_keys set outcome = 'created', decided_at = clock_timestamp() where key = ${key}`;
      await session`commit`;
      // The create applied under the key; the claim with another request under it is refused.
      expect((await other).decisions.map((d) => d.outcome)).toEqual(["idempotency_key_reused"]);
    } finally {
      await session`rollback`.catch(() => {});
      session.release();
    }
    expect(await keyRow(key)).toMatchObject({ fingerprint: createFingerprint, outcome: "created", live: true });
    expect(await count("claims", "retaken-2", "n")).toBe(0);
  });

  it("takes the keys it shares with another transaction in key order: a wait, never a deadlock", async () => {
    await createCoupon(database.handle.db, "shared-keys", 5);
    // Stored in the reverse of key order, so their rows lie in the table the other way round.
    const [low, high] = [newKey("shared-a"), newKey("shared-b")];
    await decideKeyed("shared-keys", [{ user: "h", key: high }]);
    await decideKeyed("shared-keys", [{ user: "l", key: low }]);
    await Promise.all([expire(low), expire(high)]);
    const session = await database.sql.reserve();
    try {
      // Another transaction re-takes the low key first, then (later) the high one.
      await session`begin`;
      await session`select idempotency_take(array[${low}]::text[], array['other']::text[], clock_timestamp(), ${HOUR}::float8)`;
      const batch = decideKeyed("shared-keys", [
        { user: "x", key: high },
        { user: "y", key: low },
      ]);
      await until(async () => (await waitingInBatches()) === 1, "the batch waiting for a key's row");
      await session`select idempotency_take(array[${high}]::text[], array['other']::text[], clock_timestamp(), ${HOUR}::float8)`;
      await session`update idempotency_keys set outcome = 'created', decided_at = clock_timestamp() where key in (${low}, ${high})`;
      await session`commit`;
      expect((await batch).decisions.map((d) => d.outcome)).toEqual([
        "idempotency_key_reused",
        "idempotency_key_reused",
      ]);
    } finally {
      await session`rollback`.catch(() => {});
      session.release();
    }
  }, 15_000);
});

describe("a replay racing the sweep (claim_keyed_batch)", () => {
  it("answers the stored decision even when the key expires and the sweep runs between its read and its answer", async () => {
    await createCoupon(database.handle.db, "swept", 3);
    const key = newKey("swept");
    const ttlMs = 500; // long enough for the replay to start while it lives
    const first = await decideKeyed("swept", [{ user: "a", key, ttlMs }]);
    expect(first.decisions.map((d) => d.outcome)).toEqual(["created"]);
    const session = await database.sql.reserve();
    try {
      // Holds the replay after it has read the key (claim_batch's insert waits for this lock).
      await session`begin`;
      await session`lock table claims in share mode`;
      const replay = decideKeyed("swept", [{ user: "a", key }]);
      await until(async () => (await waitingInBatches()) === 1, "the replay waiting on the claims table");
      await until(async () => (await keyRow(key))?.live === false, "the key expired", 5000);
      await sweep();
      await session`commit`;
      const { decisions } = await replay;
      expect(decisions.map((d) => [d.outcome, d.replayed])).toEqual([["created", true]]);
    } finally {
      await session`rollback`.catch(() => {});
      session.release();
    }
  });
});

describe("claimSnapshot (coupon_snapshot)", () => {
  it("reads the holders only when no claim can win: none for an open coupon, all once it sells out", async () => {
    await createCoupon(database.handle.db, "snapshot-open", 3);
    await outcomes("snapshot-open", ["a", "b"]);
    expect(await claimSnapshot(database.handle.db, "snapshot-open", 1000)).toMatchObject({
      fenced: false,
      remaining: 1,
      claimers: null,
    });
    await outcomes("snapshot-open", ["c"]);
    expect(await claimSnapshot(database.handle.db, "snapshot-open", 1000)).toMatchObject({
      remaining: 0,
      claimers: ["a", "b", "c"],
    });
  });

  it("says only 'fenced' while a change of the coupon is announced and not yet made, and nothing of a missing one", async () => {
    await createCoupon(database.handle.db, "snapshot-fenced", 1);
    await outcomes("snapshot-fenced", ["a"]);
    const fence = await fenceOf(database.handle.db, "snapshot-fenced");
    expect(await claimSnapshot(database.handle.db, "snapshot-fenced", 1000)).toEqual({ fenced: true });
    await decideBatch(database.handle.db, "snapshot-fenced", [{ user: "a", release: true, fence }]);
    expect(await claimSnapshot(database.handle.db, "snapshot-fenced", 1000)).toMatchObject({
      fenced: false,
      remaining: 1,
    });
    expect(await claimSnapshot(database.handle.db, "snapshot-missing", 1000)).toBeUndefined();
  });

  it("breaks a fence past its expiry, and the change it announced is then refused (expired, nothing applied)", async () => {
    await createCoupon(database.handle.db, "snapshot-expired", 1);
    await outcomes("snapshot-expired", ["a"]);
    const fence = "a-fence-given-up-on";
    await database.sql`select coupon_fence(${"snapshot-expired"}, ${fence}, ${1}::float8)`;
    await Bun.sleep(20);
    // The reader learns the state as it is (the writer gave up): the fence no longer stands.
    expect(await claimSnapshot(database.handle.db, "snapshot-expired", 1000)).toMatchObject({
      fenced: false,
      claimers: ["a"],
    });
    const late = await decideBatch(database.handle.db, "snapshot-expired", [{ user: "a", release: true, fence }]);
    expect(late.decisions.map((d) => d.outcome)).toEqual(["expired"]);
    expect(await stateOf("snapshot-expired")).toEqual({ remaining: 0, holders: ["a"], released: [] });
  });

  it("refuses a PATCH whose fence expired before it was made: 503, the sale unchanged", async () => {
    await createCoupon(database.handle.db, "patch-expired", 1);
    const fence = "a-patch-fence-given-up-on";
    await database.sql`select coupon_fence(${"patch-expired"}, ${fence}, ${1}::float8)`;
    await Bun.sleep(20);
    const refused = await updateCoupon(database.handle.db, "patch-expired", { active: false }, fence).catch((e) => e);
    expect({ code: refused.code, retryAfter: refused.retryAfter }).toEqual({
      code: "SERVICE_UNAVAILABLE",
      retryAfter: 1,
    });
    const [row] = await database.sql`select active from coupons where name = 'patch-expired'`;
    expect(row?.active).toBe(true);
  });
});

/** The seq of each decision of a batch, in order: undefined for all but a created one. */
const seqsOf = (batch: { decisions: ClaimDecision[] }) => batch.decisions.map((d) => d.seq);

/** A coupon's winning claims in claims.id order, held or released since, with their seqs. */
const seqsInSql = async (coupon: string) =>
  (
    await database.sql<{ user_id: string; seq: number; held: boolean }[]>`
      select user_id, seq, held from (
        select id, user_id, seq, true as held from claims where coupon_name = ${coupon}
        union all
        select claim_id, user_id, seq, false from claim_releases where coupon_name = ${coupon}
      ) s order by id`
  ).map((row) => `${row.user_id}:${row.seq}${row.held ? "" : " released"}`);

const lastSeq = async (coupon: string) =>
  (await database.sql<{ last_seq: number }[]>`select last_seq from coupons where name = ${coupon}`)[0]?.last_seq;

describe("seq: each winning claim's place among its coupon's winning claims", () => {
  it("numbers a coupon's winners 1, 2, 3… in arrival order, within a batch and across batches of either kind", async () => {
    await createCoupon(database.handle.db, "seq-order", 10);
    await createCoupon(database.handle.db, "seq-other", 10);
    expect(seqsOf(await decideBatch(database.handle.db, "seq-order", claimsBy(["a", "b", "a", "c"])))).toEqual([
      1,
      2,
      undefined,
      3,
    ]);
    // Per coupon: another coupon's first winner is 1.
    expect(seqsOf(await decideBatch(database.handle.db, "seq-other", claimsBy(["a"])))).toEqual([1]);
    expect(seqsOf(await decideBatch(database.handle.db, "seq-order", claimsBy(["d", "b", "e"])))).toEqual([
      4,
      undefined,
      5,
    ]);
    // A batch holding a release (claim_request_batch_seq) goes on from the same count.
    const mixed = await decide("seq-order", [
      { user: "f", release: false },
      { user: "nobody", release: true },
      { user: "g", release: false },
    ]);
    expect(seqsOf(mixed)).toEqual([6, undefined, 7]);
    expect(await seqsInSql("seq-order")).toEqual(["a:1", "b:2", "c:3", "d:4", "e:5", "f:6", "g:7"]);
    expect(await lastSeq("seq-order")).toBe(7);
    await expectStockInvariant(database.sql, "seq-order");
  });

  it("gives a claim after a release the next number, never the released one, which its release record keeps", async () => {
    await createCoupon(database.handle.db, "seq-reclaim", 2);
    expect(seqsOf(await decideBatch(database.handle.db, "seq-reclaim", claimsBy(["a", "b", "c"])))).toEqual([
      1,
      2,
      undefined,
    ]);
    // The released unit goes to the next claimer, with the next number.
    expect(
      seqsOf(
        await decide("seq-reclaim", [
          { user: "a", release: true },
          { user: "c", release: false },
        ]),
      ),
    ).toEqual([undefined, 3]);
    // Released and claimed again in one batch: the stock is as it was, the count has moved on.
    expect(
      seqsOf(
        await decide("seq-reclaim", [
          { user: "b", release: true },
          { user: "b", release: false },
        ]),
      ),
    ).toEqual([undefined, 4]);
    await decide("seq-reclaim", [{ user: "c", release: true }]);
    expect(seqsOf(await decideBatch(database.handle.db, "seq-reclaim", claimsBy(["a"])))).toEqual([5]);
    expect(await seqsInSql("seq-reclaim")).toEqual(["a:1 released", "b:2 released", "c:3 released", "b:4", "a:5"]);
    expect(await lastSeq("seq-reclaim")).toBe(5);
    await expectStockInvariant(database.sql, "seq-reclaim");
  });

  it("answers a keyed replay with its first answer's seq, stored with its key, on both paths and after a release", async () => {
    await createCoupon(database.handle.db, "seq-keys", 10);
    const [k1, k2] = [newKey("seq"), newKey("seq")];
    expect(seqsOf(await decideKeyed("seq-keys", [{ user: "a", key: k1 }, { user: "b" }]))).toEqual([1, 2]);
    // Claim-only (claim_keyed_batch_seq): the replay is 1 again while the new claim before it is 3.
    const replay = await decideKeyed("seq-keys", [{ user: "c" }, { user: "a", key: k1 }]);
    expect(replay.decisions.map((d) => [d.outcome, d.seq, d.replayed === true])).toEqual([
      ["created", 3, false],
      ["created", 1, true],
    ]);
    // With a release (claim_request_batch_seq): a new key stores its seq, an old one replays its own.
    const nobody = { user: "nobody", release: true };
    expect(seqsOf(await decideKeyed("seq-keys", [{ user: "d", key: k2 }, nobody]))).toEqual([4, undefined]);
    expect(seqsOf(await decideKeyed("seq-keys", [{ user: "a", key: k1 }, nobody, { user: "d", key: k2 }]))).toEqual([
      1,
      undefined,
      4,
    ]);
    const stored = await database.sql<{ key: string; seq: number }[]>`
      select key, seq from idempotency_keys where key in (${k1}, ${k2}) order by seq`;
    expect(stored.map((row) => [row.key, row.seq])).toEqual([
      [k1, 1],
      [k2, 4],
    ]);
    // The claim released, its key still answers the claim it made.
    await decide("seq-keys", [{ user: "a", release: true }]);
    expect(seqsOf(await decideKeyed("seq-keys", [{ user: "a", key: k1 }]))).toEqual([1]);
    await expectStockInvariant(database.sql, "seq-keys");
  });

  it("still decides through the names the previous versions call, with their result columns, and numbers their claims too", async () => {
    const coupon = "seq-upgrade";
    await createCoupon(database.handle.db, coupon, 10);
    const fp = fingerprint(CLAIM_ROUTE, [coupon, "c"]);
    const key = newKey("seq-upgrade");
    const fence = (await fenceOf(database.handle.db, coupon)) as string;
    // What each older replica sends (claims.ts before 0006, and the calls before fences and before
    // keys), one after the other in this order.
    const calls = [
      () => database.sql`select * from claim_batch(${coupon}, ${"{a,b}"}::text[])`,
      () => database.sql`select * from claim_keyed_batch(${coupon}, ${"{c}"}::text[], array[${key}]::text[],
        array[${fp}]::text[], ${HOUR}::float8)`,
      () => database.sql`select * from claim_request_batch(${coupon}, ${"{t,f}"}::boolean[], ${"{a,d}"}::text[],
        ${"{NULL,NULL}"}::text[], ${"{NULL,NULL}"}::text[], 0::float8, array[${fence}, NULL]::text[])`,
      () => database.sql`select * from claim_request_batch(${coupon}, ${"{t,f}"}::boolean[], ${"{b,e}"}::text[],
        ${"{NULL,NULL}"}::text[], ${"{NULL,NULL}"}::text[], 0::float8)`,
      () => database.sql`select * from claim_release_batch(${coupon}, ${"{t,f}"}::boolean[], ${"{c,f}"}::text[])`,
    ];
    const answers: { columns: string[]; outcomes: string[] }[] = [];
    for (const call of calls) {
      const rows = await call();
      answers.push({ columns: Object.keys(rows[0] ?? {}), outcomes: rows.map((row) => row.outcome) });
    }
    const plain = ["outcome", "claimed_at", "remaining", "opens_in_ms"];
    const keyed = ["outcome", "decided_at", "remaining", "opens_in_ms", "replayed"];
    expect(answers).toEqual([
      { columns: plain, outcomes: ["created", "created"] },
      { columns: keyed, outcomes: ["created"] },
      { columns: keyed, outcomes: ["released", "created"] },
      // Before fences: released unfenced, as those versions did.
      { columns: keyed, outcomes: ["released", "created"] },
      { columns: ["outcome", "decided_at", "remaining", "opens_in_ms"], outcomes: ["released", "created"] },
    ]);
    expect(await seqsInSql(coupon)).toEqual(["a:1 released", "b:2 released", "c:3 released", "d:4", "e:5", "f:6"]);
    expect((await database.sql`select seq from idempotency_keys where key = ${key}`)[0]?.seq).toBe(3);
    // The current path carries on from there.
    expect(seqsOf(await decideBatch(database.handle.db, coupon, claimsBy(["g"])))).toEqual([7]);
    await expectStockInvariant(database.sql, coupon);
  });
});
