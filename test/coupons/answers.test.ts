// The memory answers: learnt only from a committed state where no claim can win (sold out, paused,
// not open yet, ended), forgotten on a change, off while the change feed is lost, within a byte budget.
import { describe, expect, it } from "bun:test";
import { createAnswers } from "../../src/coupons/answers";
import { decideClaims } from "../../src/coupons/claim-sql";
import { createCoupon, updateCoupon } from "../../src/coupons/coupons";
import { createLogger } from "../../src/log";
import { databaseForSuite } from "../support/database";
import { type TestFeed, testFeed } from "../support/feed";

const database = databaseForSuite();

/** A coupon sold out by `users` (one unit each). */
async function soldOutCoupon(name: string, users: string[]) {
  await createCoupon(database.handle.db, name, users.length);
  await decideClaims(database.handle.db, name, users);
}

const answersWith = (maxBytes: number, maxClaimers = 1000, feed: TestFeed = testFeed(), marginMs = 1000) =>
  createAnswers(database.handle.db, {
    feed,
    maxClaimers,
    maxBytes,
    marginMs,
    loadTimeoutMs: 5000,
    log: createLogger("silent"),
  });

const outcome = (answer: { outcome: string } | undefined) => answer?.outcome;

describe("createAnswers", () => {
  it("answers holders ALREADY_CLAIMED and others SOLD_OUT once a sell-out is learnt, nothing before", async () => {
    await soldOutCoupon("seen", ["a", "b"]);
    const answers = answersWith(1024 * 1024);
    expect(answers.answer("seen", "a")).toBeUndefined();
    const learning = answers.learn("seen");
    expect(answers.answer("seen", "a")).toBeUndefined(); // still loading: the database decides
    await learning;
    expect([outcome(answers.answer("seen", "a")), outcome(answers.answer("seen", "zed"))]).toEqual([
      "already_claimed",
      "sold_out",
    ]);
    answers.invalidate("seen");
    expect(answers.answer("seen", "a")).toBeUndefined();
    expect(answers.bytes).toBe(0);
  });

  it("learns nothing of a coupon on which a claim can still win", async () => {
    await createCoupon(database.handle.db, "open", 5);
    const answers = answersWith(1024 * 1024);
    await answers.learn("open");
    expect(answers.answer("open", "anyone")).toBeUndefined();
  });

  it("answers SALE_PAUSED, SALE_ENDED and SALE_NOT_STARTED (with the seconds to the opening) from memory", async () => {
    const db = database.handle.db;
    await createCoupon(db, "paused", 5);
    await decideClaims(db, "paused", ["holder"]);
    await updateCoupon(db, "paused", { active: false });
    await createCoupon(db, "ended", 5, { endsAt: new Date(Date.now() - 1000) });
    await createCoupon(db, "later", 5, { startsAt: new Date(Date.now() + 30_000) });
    const answers = answersWith(1024 * 1024);
    await Promise.all(["paused", "ended", "later"].map((name) => answers.learn(name)));
    expect(outcome(answers.answer("paused", "holder"))).toBe("already_claimed"); // holders first, as in SQL
    expect(outcome(answers.answer("paused", "other"))).toBe("sale_paused");
    expect(outcome(answers.answer("ended", "other"))).toBe("sale_ended");
    const notYet = answers.answer("later", "other");
    expect(notYet?.outcome).toBe("sale_not_started");
    expect(notYet?.retryAfter).toBeGreaterThanOrEqual(29);
    expect(notYet?.retryAfter).toBeLessThanOrEqual(30);
  });

  it("leaves claims within the margin of the opening to the database, on the database's clock", async () => {
    const db = database.handle.db;
    await createCoupon(db, "soon", 5, { startsAt: new Date(Date.now() + 5000) });
    // This replica's clock runs 10 s slow; the measured offset corrects it: 5 s ahead is outside a 1 s margin.
    const slow = testFeed({ now: () => Date.now() - 10_000, clock: { offsetMs: 10_000, uncertaintyMs: 0 } });
    const corrected = answersWith(1024 * 1024, 1000, slow);
    await corrected.learn("soon");
    // A 6 s margin covers the opening: the database decides every claim until it has passed.
    const wide = answersWith(1024 * 1024, 1000, testFeed(), 6000);
    await wide.learn("soon");
    expect(outcome(corrected.answer("soon", "u"))).toBe("sale_not_started");
    expect(wide.answer("soon", "u")).toBeUndefined();
  });

  it("answers nothing from memory while the change feed is lost, and forgets what it held", async () => {
    await soldOutCoupon("feedless", ["a"]);
    const feed = testFeed();
    const answers = answersWith(1024 * 1024, 1000, feed);
    feed.subscribe({ change: answers.invalidate, lost: answers.clear });
    await answers.learn("feedless");
    expect(outcome(answers.answer("feedless", "b"))).toBe("sold_out");
    feed.setLive(false);
    expect(answers.answer("feedless", "b")).toBeUndefined();
    await answers.learn("feedless"); // refused while lost
    feed.setLive(true);
    expect(answers.answer("feedless", "b")).toBeUndefined();
    await answers.learn("feedless");
    expect(outcome(answers.answer("feedless", "b"))).toBe("sold_out");
  });

  it("discards a load that an invalidation overtook", async () => {
    await soldOutCoupon("overtaken", ["a"]);
    const answers = answersWith(1024 * 1024);
    const learning = answers.learn("overtaken");
    answers.invalidate("overtaken"); // the change arrived while the snapshot was on its way
    await learning;
    expect(answers.answer("overtaken", "b")).toBeUndefined();
  });

  it("never holds more than its byte budget: older coupons are forgotten first", async () => {
    const users = (prefix: string) => Array.from({ length: 50 }, (_, i) => `${prefix}-${i}`);
    await soldOutCoupon("older", users("o"));
    await soldOutCoupon("newer", users("n"));
    // Room for one coupon of 50 short ids (~100 bytes each), not two.
    const answers = answersWith(8000);
    await answers.learn("older");
    expect(outcome(answers.answer("older", "o-1"))).toBe("already_claimed");
    await answers.learn("newer");
    expect(outcome(answers.answer("newer", "n-1"))).toBe("already_claimed");
    expect(answers.answer("older", "o-1")).toBeUndefined();
    expect(answers.bytes).toBeGreaterThan(0);
    expect(answers.bytes).toBeLessThanOrEqual(8000);
  });

  it("leaves a coupon larger than the whole budget, or than maxClaimers, to the database", async () => {
    await soldOutCoupon(
      "huge",
      Array.from({ length: 200 }, (_, i) => `h-${i}`),
    );
    const tight = answersWith(1000);
    await tight.learn("huge");
    expect(tight.answer("huge", "h-1")).toBeUndefined();
    expect(tight.bytes).toBe(0);
    const few = answersWith(1024 * 1024, 10);
    await few.learn("huge");
    expect(few.answer("huge", "nobody")).toBeUndefined();
  });
});
