// The memory answers: learnt only from a committed state where no claim can win (sold out, paused,
// not open yet, ended), forgotten on a change, off while the change feed is lost, within a byte budget.
import { describe, expect, it } from "bun:test";
import { createAnswers } from "../../src/engine/answers";
import { createLogger } from "../../src/log";
import { decideClaims } from "../../src/store/claims";
import { createCoupon } from "../../src/store/coupons";
import { changeSale, claimsBy } from "../support/coupons";
import { databaseForSuite } from "../support/database";
import { type TestFeed, testFeed } from "../support/feed";

const database = databaseForSuite();

/** A coupon sold out by `users` (one unit each). */
async function soldOutCoupon(name: string, users: string[]) {
  await createCoupon(database.handle.db, name, users.length);
  await decideClaims(database.handle.db, name, claimsBy(users));
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
    await decideClaims(db, "paused", claimsBy(["holder"]));
    await changeSale(db, "paused", { active: false });
    await createCoupon(db, "ended", 5, { endsAt: new Date(Date.now() - 1000) });
    await createCoupon(db, "later", 5, { startsAt: new Date(Date.now() + 30_000) });
    const answers = answersWith(1024 * 1024);
    await Promise.all(["paused", "ended", "later"].map((name) => answers.learn(name)));
    expect(outcome(answers.answer("paused", "holder"))).toBe("already_claimed"); // holders first, as in SQL
    expect(outcome(answers.answer("paused", "other"))).toBe("sale_paused");
    expect(outcome(answers.answer("ended", "other"))).toBe("sale_ended");
    const notYet = answers.answer("later", "other");
    if (notYet?.outcome !== "sale_not_started") throw new Error(`expected sale_not_started, got ${notYet?.outcome}`);
    expect(notYet.retryAfter).toBeGreaterThanOrEqual(29);
    expect(notYet.retryAfter).toBeLessThanOrEqual(30);
  });

  it("leaves claims within the margin of the opening to the database, on the database's clock", async () => {
    const db = database.handle.db;
    await createCoupon(db, "soon", 5, { startsAt: new Date(Date.now() + 5000) });
    // 5 s ahead is outside a 1 s margin when the database's clock is known exactly...
    const exact = answersWith(1024 * 1024);
    await exact.learn("soon");
    // ...and within it when the clock is known only to 4.5 s, or with a 6 s margin.
    const uncertain = answersWith(1024 * 1024, 1000, testFeed({ clock: { uncertaintyMs: 4500 } }));
    await uncertain.learn("soon");
    const wide = answersWith(1024 * 1024, 1000, testFeed(), 6000);
    await wide.learn("soon");
    expect(outcome(exact.answer("soon", "u"))).toBe("sale_not_started");
    expect(uncertain.answer("soon", "u")).toBeUndefined();
    expect(wide.answer("soon", "u")).toBeUndefined();
  });

  it("gives the database's answer at every instant as a sold-out sale's end passes: SOLD_OUT, then the database, then SALE_ENDED", async () => {
    const db = database.handle.db;
    const endsAt = Date.now() + 3_600_000;
    await createCoupon(db, "ending", 1, { endsAt: new Date(endsAt) });
    await decideClaims(db, "ending", claimsBy(["h"]));
    let now = Date.now();
    const answers = answersWith(1024 * 1024, 1000, testFeed({ clock: { now: () => now } }), 100);
    await answers.learn("ending");
    const at = (ms: number) => {
      now = ms;
      return [outcome(answers.answer("ending", "x")), outcome(answers.answer("ending", "h"))];
    };
    expect(at(endsAt - 101)).toEqual(["sold_out", "already_claimed"]);
    expect(at(endsAt - 100)).toEqual([undefined, "already_claimed"]); // within the margin: the database
    expect(at(endsAt + 99)).toEqual([undefined, "already_claimed"]);
    expect(at(endsAt + 100)).toEqual(["sale_ended", "already_claimed"]);
  });

  it("answers a sale not open yet until its opening nears, and nothing of it once it may have opened", async () => {
    const db = database.handle.db;
    const startsAt = Date.now() + 3_600_000;
    await createCoupon(db, "opening", 2, { startsAt: new Date(startsAt) });
    let now = Date.now();
    const answers = answersWith(1024 * 1024, 1000, testFeed({ clock: { now: () => now } }), 100);
    await answers.learn("opening");
    now = startsAt - 1101;
    expect(answers.answer("opening", "x")).toEqual({ outcome: "sale_not_started", retryAfter: 2 });
    now = startsAt - 100;
    expect(answers.answer("opening", "x")).toBeUndefined();
    now = startsAt + 100; // claims may have won since: the entry is forgotten, not trusted again
    expect(answers.answer("opening", "x")).toBeUndefined();
    now = startsAt - 1101;
    expect(answers.answer("opening", "x")).toBeUndefined();
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
