// The group-commit queue: batching, failure isolation, bounds, deadlines and the sold-out fast path.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { decideClaims } from "../../src/coupons/claim";
import { type ClaimerOptions, createClaimer } from "../../src/coupons/claimer";
import { createCoupon } from "../../src/coupons/coupons";
import type { AppError } from "../../src/errors";
import { createLogger } from "../../src/log";
import { createTestDatabase, type TestDatabase } from "../support/database";
import { expectStockInvariant } from "../support/invariant";

let database: TestDatabase;
beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(() => database.drop());

const options = (overrides: Partial<ClaimerOptions> = {}): ClaimerOptions => ({
  batchMax: 64,
  queueMax: 1000,
  pendingMax: 10_000,
  timeoutMs: 5000,
  soldOutCacheMax: 1000,
  log: createLogger("silent"),
  ...overrides,
});

/** Records every batch handed to the real decideClaims. */
function recordingDecide() {
  const batches: string[][] = [];
  const decide: typeof decideClaims = (db, coupon, users) => {
    batches.push([...users]);
    return decideClaims(db, coupon, users);
  };
  return { batches, decide };
}

const settle = <T>(promises: Promise<T>[]) => Promise.allSettled(promises);

describe("createClaimer", () => {
  it("decides claims that arrive while a transaction is in flight together, in arrival order", async () => {
    await createCoupon(database.handle.db, "batched", 100);
    const { batches, decide } = recordingDecide();
    const claimer = createClaimer(database.handle.db, options({ decide, batchMax: 8 }));
    const users = Array.from({ length: 20 }, (_, i) => `u${i}`);
    const decisions = await Promise.all(users.map((u) => claimer.claim("batched", u)));
    expect(decisions.every((d) => d.outcome === "created")).toBe(true);
    expect(batches.flat()).toEqual(users);
    expect(batches[0]).toEqual(["u0"]); // the first claim starts a transaction at once
    expect(Math.max(...batches.map((b) => b.length))).toBe(8); // later ones wait and share
  });

  it("fails every claim of a failing batch with SERVICE_UNAVAILABLE and applies none of it", async () => {
    await createCoupon(database.handle.db, "failing", 10);
    let calls = 0;
    const claimer = createClaimer(
      database.handle.db,
      options({
        decide: async (db, coupon, users) => {
          calls++;
          if (calls === 2) throw new Error("connection reset mid-transaction");
          return decideClaims(db, coupon, users);
        },
      }),
    );
    const results = await settle(["a", "b", "c", "d"].map((u) => claimer.claim("failing", u)));
    expect(results[0]).toMatchObject({ status: "fulfilled" });
    for (const r of results.slice(1)) {
      expect(r.status).toBe("rejected");
      const error = (r as PromiseRejectedResult).reason as AppError;
      expect([error.code, error.status, error.retryAfter]).toEqual(["SERVICE_UNAVAILABLE", 503, 1]);
    }
    const rows = await database.sql`select user_id from claims where coupon_name = 'failing'`;
    expect(rows.map((r) => r.user_id)).toEqual(["a"]);
    await expectStockInvariant(database.sql, "failing");
    // The next claim is unaffected: one bad batch does not poison the coupon.
    expect((await claimer.claim("failing", "e")).outcome).toBe("created");
  });

  it("maps a unique violation to ALREADY_CLAIMED, retrying a batch one claim at a time", async () => {
    await createCoupon(database.handle.db, "unique", 10);
    const violation = Object.assign(new Error("duplicate key"), { code: "23505" });
    const claimer = createClaimer(
      database.handle.db,
      options({
        decide: async (db, coupon, users) => {
          if (users.includes("intruder")) throw new Error("wrapped", { cause: violation });
          return decideClaims(db, coupon, users);
        },
      }),
    );
    const results = await Promise.all(["x", "intruder", "y"].map((u) => claimer.claim("unique", u)));
    expect(results.map((r) => r.outcome)).toEqual(["created", "already_claimed", "created"]);
  });

  it("refuses claims past the per-coupon queue bound at once with 503 and Retry-After", async () => {
    await createCoupon(database.handle.db, "bounded", 100);
    const claimer = createClaimer(database.handle.db, options({ queueMax: 5 }));
    const results = await settle(Array.from({ length: 12 }, (_, i) => claimer.claim("bounded", `q${i}`)));
    const refused = results.filter((r) => r.status === "rejected");
    // One claim is in flight, five wait; the other six are refused without touching the database.
    expect(refused.length).toBe(6);
    expect(((refused[0] as PromiseRejectedResult).reason as AppError).retryAfter).toBe(1);
    await expectStockInvariant(database.sql, "bounded");
    expect((await database.sql`select remaining_amount from coupons where name = 'bounded'`)[0]?.remaining_amount).toBe(
      94,
    );
  });

  it("refuses claims past the per-process bound across coupons", async () => {
    await createCoupon(database.handle.db, "proc-a", 10);
    await createCoupon(database.handle.db, "proc-b", 10);
    const claimer = createClaimer(database.handle.db, options({ pendingMax: 3 }));
    const results = await settle(
      ["proc-a", "proc-b", "proc-a", "proc-b", "proc-a"].map((c, i) => claimer.claim(c, `p${i}`)),
    );
    expect(results.filter((r) => r.status === "rejected").length).toBe(2);
  });

  it("answers 503 at the deadline to claims queued or in flight, without waiting for a stalled batch", async () => {
    await createCoupon(database.handle.db, "slow", 10);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const claimer = createClaimer(
      database.handle.db,
      options({
        timeoutMs: 50,
        decide: async (db, coupon, users, signal) => {
          const result = await decideClaims(db, coupon, users);
          await gate; // a stalled connection: the answer comes back after the deadline
          signal?.throwIfAborted();
          return result;
        },
      }),
    );
    const started = Date.now();
    const results = await settle([claimer.claim("slow", "in-flight"), claimer.claim("slow", "queued")]);
    expect(Date.now() - started).toBeLessThan(1000);
    for (const r of results) {
      expect(((r as PromiseRejectedResult).reason as AppError).code).toBe("SERVICE_UNAVAILABLE");
    }
    release();
    await claimer.drain();
    expect((await claimer.claim("slow", "after")).outcome).toBe("created");
  });

  it("rolls back a batch whose deadline passed before it could commit", async () => {
    await createCoupon(database.handle.db, "late-commit", 10);
    const aborted = new AbortController();
    aborted.abort();
    const attempt = await decideClaims(database.handle.db, "late-commit", ["x"], aborted.signal).catch((e) => e);
    expect(attempt).toBeInstanceOf(Error);
    const rows = await database.sql`select count(*)::int as n from claims where coupon_name = 'late-commit'`;
    expect(rows[0]?.n).toBe(0);
    await expectStockInvariant(database.sql, "late-commit");
  });

  it("answers claims on a sold-out coupon without a transaction, holders first", async () => {
    await createCoupon(database.handle.db, "gone", 2);
    const { batches, decide } = recordingDecide();
    const claimer = createClaimer(database.handle.db, options({ decide }));
    await claimer.claim("gone", "h1");
    await claimer.claim("gone", "h2"); // sells out; the claimer learns it from the commit
    const before = batches.length;
    const after = await Promise.all(["h1", "late1", "h2", "late2"].map((u) => claimer.claim("gone", u)));
    expect(after.map((d) => d.outcome)).toEqual(["already_claimed", "sold_out", "already_claimed", "sold_out"]);
    expect(batches.length).toBe(before);
  });

  it("falls back to indexed reads when a sold-out coupon has more claimers than the cache holds", async () => {
    await createCoupon(database.handle.db, "big-gone", 3);
    const { batches, decide } = recordingDecide();
    const claimer = createClaimer(database.handle.db, options({ decide, soldOutCacheMax: 1 }));
    await Promise.all(["b1", "b2", "b3"].map((u) => claimer.claim("big-gone", u)));
    const before = batches.length;
    const after = await Promise.all(["b2", "nobody"].map((u) => claimer.claim("big-gone", u)));
    expect(after.map((d) => d.outcome)).toEqual(["already_claimed", "sold_out"]);
    expect(batches.length).toBe(before);
  });

  it("drains: resolves once every waiting claim is answered", async () => {
    await createCoupon(database.handle.db, "drain", 50);
    const claimer = createClaimer(database.handle.db, options());
    const claims = Array.from({ length: 30 }, (_, i) => claimer.claim("drain", `d${i}`));
    expect(claimer.pending).toBe(30);
    await claimer.drain();
    expect(claimer.pending).toBe(0);
    expect((await Promise.all(claims)).length).toBe(30);
    await claimer.drain(); // resolves at once when idle
  });
});
