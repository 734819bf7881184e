// The claim path behind the route: batching, failure isolation, admission, deadlines and memory answers.
import { describe, expect, it } from "bun:test";
import { loadConfig } from "../../src/config";
import { claimRequest } from "../../src/domain/claim";
import { type ClaimerOptions, createClaimer } from "../../src/engine/claimer";
import { createLogger } from "../../src/log";
import { decideClaims } from "../../src/store/claims";
import { openPostgres } from "../../src/store/client";
import { createCoupon } from "../../src/store/coupons";
import { databaseForSuite } from "../support/database";
import { testFeed } from "../support/feed";
import { expectStockInvariant } from "../support/invariant";
import { holdAdvisoryLock } from "../support/locks";

const database = databaseForSuite();

const options = (overrides: Partial<ClaimerOptions> = {}): ClaimerOptions => ({
  batchMax: 64,
  queueMax: 1000,
  pendingMax: 10_000,
  timeoutMs: 5000,
  soldOutCacheMax: 1000,
  soldOutCacheBytes: 1024 * 1024,
  refusalDelayMs: 0,
  scheduleMarginMs: 1000,
  feed: testFeed(),
  log: createLogger("silent"),
  ...overrides,
});

/** Records every batch handed to the real decideClaims. */
function recordingDecide() {
  const batches: string[][] = [];
  const decide: typeof decideClaims = (db, coupon, requests) => {
    batches.push(requests.map((request) => request.user));
    return decideClaims(db, coupon, requests);
  };
  return { batches, decide };
}

/** A claimer and a one-line way to claim through it, as the route does. */
function claimerFor(overrides: Partial<ClaimerOptions> = {}) {
  const opts = options(overrides);
  const claimer = createClaimer(database.handle.db, opts);
  const claim = (coupon: string, user: string) => claimer.claimCoupon(claimRequest(coupon, user, opts.timeoutMs));
  const outcomes = async (coupon: string, users: string[]) =>
    (await Promise.all(users.map((user) => claim(coupon, user)))).map((r) => r.outcome);
  return { claimer, claim, outcomes };
}

describe("claimCoupon", () => {
  it("decides claims that arrive while a batch is in flight together, in arrival order", async () => {
    await createCoupon(database.handle.db, "batched", 100);
    const { batches, decide } = recordingDecide();
    const { outcomes } = claimerFor({ decide, batchMax: 8 });
    const users = Array.from({ length: 20 }, (_, i) => `u${i}`);
    expect(new Set(await outcomes("batched", users))).toEqual(new Set(["created"]));
    expect(batches.flat()).toEqual(users);
    expect(batches[0]).toEqual(["u0"]); // the first claim starts a batch at once
    expect(Math.max(...batches.map((b) => b.length))).toBe(8); // later ones wait and share
  });

  it("answers every claim of a failing batch 'unconfirmed' (503), applies none of it, and goes on", async () => {
    await createCoupon(database.handle.db, "failing", 10);
    let calls = 0;
    const { claim, outcomes } = claimerFor({
      decide: async (db, coupon, requests) => {
        calls++;
        if (calls === 2) throw new Error("connection reset mid-transaction");
        return decideClaims(db, coupon, requests);
      },
    });
    expect(await outcomes("failing", ["a", "b", "c", "d"])).toEqual([
      "created",
      "unconfirmed",
      "unconfirmed",
      "unconfirmed",
    ]);
    const rows = await database.sql`select user_id from claims where coupon_name = 'failing'`;
    expect(rows.map((r) => r.user_id)).toEqual(["a"]);
    await expectStockInvariant(database.sql, "failing");
    expect((await claim("failing", "e")).outcome).toBe("created"); // one bad batch does not poison the coupon
  });

  it("logs a failed batch with its cause: the database's code and words, not only the failed query", async () => {
    await createCoupon(database.handle.db, "timed-out", 10);
    const url = database.url;
    const pool = openPostgres(url, loadConfig({ DATABASE_URL: url, DATABASE_STATEMENT_TIMEOUT_MS: "200" }));
    const lines: Record<string, unknown>[] = [];
    const log = createLogger("warn", (line) => lines.push(JSON.parse(line)));
    const claimer = createClaimer(pool.db, options({ log }));
    // Another transaction holds the coupon's claim lock past the pool's lock_timeout.
    const lock = await holdAdvisoryLock(database.sql, "timed-out");
    try {
      const result = await claimer.claimCoupon(claimRequest("timed-out", "u", 5000));
      expect(result.outcome).toBe("unconfirmed");
    } finally {
      await lock.release();
      await pool.close();
    }
    const failed = lines.find((line) => line.msg === "claim batch failed; its claims were answered 503");
    // statement_timeout and lock_timeout are both 200 ms here: either may be the one that fires.
    expect(failed?.cause).toMatch(/^PostgresError (55P03|57014): canceling statement due to (lock|statement) timeout$/);
    expect(JSON.stringify(failed)).not.toContain("params:"); // the users of the batch are not logged
  });

  it("refuses claims past the per-coupon queue bound at once, without touching the database", async () => {
    await createCoupon(database.handle.db, "bounded", 100);
    const { outcomes } = claimerFor({ queueMax: 5 });
    const results = await outcomes(
      "bounded",
      Array.from({ length: 12 }, (_, i) => `q${i}`),
    );
    // One claim is in flight, five wait; the other six are refused.
    expect(results.filter((o) => o === "overloaded").length).toBe(6);
    expect((await database.sql`select remaining_amount from coupons where name = 'bounded'`)[0]?.remaining_amount).toBe(
      94,
    );
    await expectStockInvariant(database.sql, "bounded");
  });

  it("refuses claims past the per-process bound across coupons", async () => {
    await createCoupon(database.handle.db, "proc-a", 10);
    await createCoupon(database.handle.db, "proc-b", 10);
    const { claim } = claimerFor({ pendingMax: 3 });
    const results = await Promise.all(
      ["proc-a", "proc-b", "proc-a", "proc-b", "proc-a"].map((c, i) => claim(c, `p${i}`)),
    );
    expect(results.filter((r) => r.outcome === "overloaded").length).toBe(2);
  });

  it("answers at the deadline: queued claims 'expired' (never sent), the stalled batch 'unconfirmed'", async () => {
    await createCoupon(database.handle.db, "slow", 10);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const { claimer, outcomes } = claimerFor({
      timeoutMs: 100,
      decide: async (db, coupon, users) => {
        const result = await decideClaims(db, coupon, users);
        await gate; // a stalled connection: the answer comes back after the deadline
        return result;
      },
    });
    expect(await outcomes("slow", ["in-flight", "queued"])).toEqual(["unconfirmed", "expired"]);
    release();
    await claimer.drain();
    // "queued" was never sent; "in-flight" was, and is stored: unconfirmed means "may have been applied".
    const rows = await database.sql`select user_id from claims where coupon_name = 'slow'`;
    expect(rows.map((r) => r.user_id)).toEqual(["in-flight"]);
    // The coupon goes on (a claim with a roomy deadline of its own: a real round trip may pass 100 ms).
    expect((await claimer.claimCoupon(claimRequest("slow", "after", 5000))).outcome).toBe("created");
  });

  it("answers claims on a sold-out coupon from memory, holders first", async () => {
    await createCoupon(database.handle.db, "gone", 2);
    const { batches, decide } = recordingDecide();
    const { claim, outcomes } = claimerFor({ decide });
    await claim("gone", "h1");
    await claim("gone", "h2"); // sells out; the claimer learns it from the commit
    await Bun.sleep(50); // the claimers load in the background
    const before = batches.length;
    expect(await outcomes("gone", ["h1", "late1", "h2", "late2"])).toEqual([
      "already_claimed",
      "sold_out",
      "already_claimed",
      "sold_out",
    ]);
    expect(batches.length).toBe(before);
  });

  it("leaves a sold-out coupon with more claimers than it may hold to the database, with the same answers", async () => {
    await createCoupon(database.handle.db, "big-gone", 3);
    const { batches, decide } = recordingDecide();
    const { outcomes } = claimerFor({ decide, soldOutCacheMax: 1 });
    await outcomes("big-gone", ["b1", "b2", "b3"]);
    await Bun.sleep(50);
    const before = batches.length;
    expect(await outcomes("big-gone", ["b2", "nobody"])).toEqual(["already_claimed", "sold_out"]);
    expect(batches.length).toBeGreaterThan(before);
  });

  it("drains: resolves once every waiting claim is answered", async () => {
    await createCoupon(database.handle.db, "drain", 50);
    const { claimer, claim } = claimerFor();
    const claims = Array.from({ length: 30 }, (_, i) => claim("drain", `d${i}`));
    expect(claimer.pending).toBe(30);
    await claimer.drain();
    expect(claimer.pending).toBe(0);
    expect((await Promise.all(claims)).length).toBe(30);
    await claimer.drain(); // resolves at once when idle
  });
});

describe("admission of keyed requests", () => {
  const keyOf = (key: string) => ({ key, fingerprint: `fp-${key}`, ttlMs: 60_000 });

  it("takes one request per Idempotency-Key at a time: the second waits, then gets the first's decision replayed", async () => {
    await createCoupon(database.handle.db, "keyed-turns", 5);
    let release = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const { batches, decide } = recordingDecide();
    const gated: typeof decideClaims = async (...args) => {
      await gate;
      return decide(...args);
    };
    const { claimer } = claimerFor({ decide: gated });
    const idempotency = keyOf(`turn-${crypto.randomUUID()}`);
    const first = claimer.claimCoupon(claimRequest("keyed-turns", "kim", 5000, { idempotency }));
    const second = claimer.claimCoupon(claimRequest("keyed-turns", "kim", 5000, { idempotency }));
    await Bun.sleep(20);
    expect(claimer.pending).toBe(1); // the second waits for its key's turn, not in the coupon's queue
    release();
    const [a, b] = await Promise.all([first, second]);
    expect(batches).toEqual([["kim"], ["kim"]]);
    if (a.outcome !== "created" || b.outcome !== "created") throw new Error("expected two 201s");
    expect([a.replayed, b.replayed]).toEqual([undefined, true]);
    expect(b.decidedAt.getTime()).toBe(a.decidedAt.getTime());
  });

  it("answers idempotency_key_in_use to a request whose deadline passes while its key's first request is decided", async () => {
    await createCoupon(database.handle.db, "keyed-late", 5);
    let release = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const decide: typeof decideClaims = async (db, coupon, requests) => {
      await gate;
      return decideClaims(db, coupon, requests);
    };
    const { claimer } = claimerFor({ decide });
    const idempotency = keyOf(`late-${crypto.randomUUID()}`);
    const first = claimer.claimCoupon(claimRequest("keyed-late", "lee", 5000, { idempotency }));
    const late = await claimer.claimCoupon(claimRequest("keyed-late", "lee", 50, { idempotency }));
    expect(late).toEqual({ outcome: "idempotency_key_in_use" });
    release();
    expect((await first).outcome).toBe("created");
  });

  it("creates a coupon once for one key, a second create with it waiting its turn and replaying the first", async () => {
    const { claimer } = claimerFor();
    const idempotency = keyOf(`create-${crypto.randomUUID()}`);
    const request = { name: "keyed-create", amount: 3, schedule: {}, idempotency };
    const [first, second] = await Promise.all([
      claimer.createCoupon({ ...request, deadline: performance.now() + 5000 }),
      claimer.createCoupon({ ...request, deadline: performance.now() + 5000 }),
    ]);
    expect(first).toEqual({ outcome: "created", coupon: { name: "keyed-create", amount: 3, remaining_amount: 3 } });
    expect(second).toEqual({ ...first, replayed: true });
  });
});

describe("changeSale", () => {
  it("refuses a change of a coupon that does not exist with COUPON_NOT_FOUND, fencing nothing", async () => {
    const { claimer } = claimerFor();
    const refused = claimer.changeSale("no-such-coupon", { active: false }, performance.now() + 5000);
    await expect(refused).rejects.toMatchObject({ code: "COUPON_NOT_FOUND" });
  });

  it("answers SERVICE_UNAVAILABLE, changing nothing, when the lease cannot be waited out before the deadline", async () => {
    await createCoupon(database.handle.db, "late-change", 5);
    const { claimer } = claimerFor({ feed: testFeed({ leaseMs: 10_000 }) });
    const refused = claimer.changeSale("late-change", { active: false }, performance.now() + 1000);
    await expect(refused).rejects.toMatchObject({ code: "SERVICE_UNAVAILABLE", retryAfter: 1 });
    const [row] = await database.sql<{ active: boolean }[]>`select active from coupons where name = 'late-change'`;
    expect(row?.active).toBe(true);
  });
});
