// The memory answers: only a committed sell-out is remembered, within a byte budget for the process.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { createAnswers } from "../../src/coupons/answers";
import { decideClaims } from "../../src/coupons/claim-sql";
import { createCoupon } from "../../src/coupons/coupons";
import { createLogger } from "../../src/log";
import { createTestDatabase, type TestDatabase } from "../support/database";

let database: TestDatabase;
beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(() => database.drop());

/** A coupon sold out by `users` (one unit each). */
async function soldOutCoupon(name: string, users: string[]) {
  await createCoupon(database.handle.db, name, users.length);
  await decideClaims(database.handle.db, name, users);
}

const answersWith = (maxBytes: number, maxClaimers = 1000) =>
  createAnswers(database.handle.db, { maxClaimers, maxBytes, loadTimeoutMs: 5000, log: createLogger("silent") });

/** Waits until the background load of `name` has settled one way or the other. */
const loaded = () => Bun.sleep(100);

describe("createAnswers", () => {
  it("answers holders ALREADY_CLAIMED and others SOLD_OUT once a sell-out is seen, nothing before", async () => {
    await soldOutCoupon("seen", ["a", "b"]);
    const answers = answersWith(1024 * 1024);
    expect(answers.answer("seen", "a")).toBeUndefined();
    answers.soldOut("seen");
    expect(answers.answer("seen", "a")).toBeUndefined(); // still loading: the database decides
    await loaded();
    expect([answers.answer("seen", "a"), answers.answer("seen", "zed")]).toEqual(["already_claimed", "sold_out"]);
    answers.invalidate("seen");
    expect(answers.answer("seen", "a")).toBeUndefined();
    expect(answers.bytes).toBe(0);
  });

  it("never holds more than its byte budget: older coupons are forgotten first", async () => {
    const users = (prefix: string) => Array.from({ length: 50 }, (_, i) => `${prefix}-${i}`);
    await soldOutCoupon("older", users("o"));
    await soldOutCoupon("newer", users("n"));
    // Room for one coupon of 50 short ids (~100 bytes each), not two.
    const answers = answersWith(8000);
    answers.soldOut("older");
    await loaded();
    expect(answers.answer("older", "o-1")).toBe("already_claimed");
    answers.soldOut("newer");
    await loaded();
    expect(answers.answer("newer", "n-1")).toBe("already_claimed");
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
    tight.soldOut("huge");
    await loaded();
    expect(tight.answer("huge", "h-1")).toBeUndefined();
    expect(tight.bytes).toBe(0);
    const few = answersWith(1024 * 1024, 10);
    few.soldOut("huge");
    await loaded();
    expect(few.answer("huge", "nobody")).toBeUndefined();
  });
});
