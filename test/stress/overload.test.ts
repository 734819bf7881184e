// Overload: far more concurrent clients than the claim queue admits, every one retrying at once, as a
// flash-sale herd does. Committed claims must keep flowing near the unloaded rate, and every claim the
// database committed must have been answered 201 (a 503 is only for claims never applied).
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { createTestDatabase, type TestDatabase } from "../support/database";
import { expectStockInvariant } from "../support/invariant";
import { type Service, startService } from "../support/service";

const QUEUE_MAX = 20;
const SECONDS = 3;
/** Overloaded goodput must stay above this fraction of the unloaded rate. */
const GOODPUT_FRACTION = 0.5;

let database: TestDatabase;
let service: Service;
beforeAll(async () => {
  database = await createTestDatabase();
  service = await startService({ DATABASE_URL: database.url, CLAIM_QUEUE_MAX: String(QUEUE_MAX) });
}, 30_000);
afterAll(async () => {
  service.child.kill("SIGTERM");
  await service.child.exited;
  await database.drop();
});

/** `clients` closed loops claiming `coupon` with fresh users for SECONDS; each answer recorded. */
async function herd(coupon: string, clients: number) {
  const answers = new Map<string, number>();
  const end = Date.now() + SECONDS * 1000;
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      for (let i = 0; Date.now() < end; i++) {
        const user = `${coupon}-${c}-${i}`;
        const res = await service.api.claim(user, coupon);
        answers.set(user, res.status);
      }
    }),
  );
  const created = [...answers].filter(([, status]) => status === 201).map(([user]) => user);
  const stored = await database.sql<{ user_id: string }[]>`select user_id from claims where coupon_name = ${coupon}`;
  return { answers, created, stored: stored.map((r) => r.user_id), perSecond: created.length / SECONDS };
}

describe("a herd twenty times the queue bound", () => {
  it("keeps committing near the unloaded rate and answers every committed claim 201", async () => {
    for (const name of ["calm", "herd"]) expect((await service.api.createCoupon(name, 10_000_000)).status).toBe(201);
    const calm = await herd("calm", QUEUE_MAX);
    const loaded = await herd("herd", QUEUE_MAX * 20);
    console.log(
      `overload: unloaded ${calm.perSecond.toFixed(0)} claims/s with ${QUEUE_MAX} clients; ` +
        `${loaded.perSecond.toFixed(0)} claims/s with ${QUEUE_MAX * 20} clients ` +
        `(${[...loaded.answers.values()].filter((s) => s === 503).length} refused with 503)`,
    );
    // Only 201 and 503 (refused: nothing applied); every stored claim was answered 201 and vice versa.
    expect(new Set(loaded.answers.values())).toEqual(new Set([201, 503]));
    expect(new Set(loaded.stored)).toEqual(new Set(loaded.created));
    expect(new Set(calm.stored)).toEqual(new Set(calm.created));
    expect(loaded.perSecond).toBeGreaterThan(calm.perSecond * GOODPUT_FRACTION);
    await expectStockInvariant(database.sql, "herd");
  }, 30_000);
});
