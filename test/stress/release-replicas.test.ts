// Releases across three replicas, each with its own pool and its own change feed: a flash sale with
// cancellations stays exact, and a unit given back on one replica stops every other replica from
// answering SOLD_OUT from memory within the propagation bound, or at once while its feed is down.
// C listens through a fault proxy, so its feed can be cut.
import { describe, expect, it } from "bun:test";
import { type ApiResponse, type Client, countStatus } from "../support/http";
import { expectStockInvariant } from "../support/invariant";
import { metric, replicasForSuite, until } from "../support/replicas";

/** The bound this suite holds replicas to for a change to reach them (docs/operations.md, "Answers from memory"). */
const PROPAGATION_BOUND_MS = 1000;

const cluster = replicasForSuite();

const [A, B, C] = [0, 1, 2].map((i) => () => cluster.clients[i] as Client) as [
  () => Client,
  () => Client,
  () => Client,
];

const release = (replica: Client, coupon: string, user: string) =>
  replica.call("DELETE", `/api/coupons/${encodeURIComponent(coupon)}/claims/${encodeURIComponent(user)}`);

let fresh = 0;
/** A claim on `replica` by a user never seen before. */
const freshClaim = (replica: Client, coupon: string) => replica.claim(`fresh-${fresh++}`, coupon);

/** Claims by fresh users on `replica` until one is answered from memory (SOLD_OUT); 5 s at most. */
async function answeredFromMemory(replica: Client, coupon: string): Promise<void> {
  await until(async () => {
    const before = await metric(replica, "coupon_claims_from_memory_total");
    const res = await freshClaim(replica, coupon);
    expect(res.body.code).toBe("SOLD_OUT");
    return (await metric(replica, "coupon_claims_from_memory_total")) > before;
  }, "answers from memory");
}

/** Sold out: `holders` claim all of `coupon`'s stock on A. */
async function soldOutTo(coupon: string, holders: string[]): Promise<void> {
  expect((await A().createCoupon(coupon, holders.length)).status).toBe(201);
  for (const holder of holders) expect((await A().claim(holder, coupon)).status).toBe(201);
}

const claimedBy = async (coupon: string): Promise<string[]> => (await A().getCoupon(coupon)).body.claimed_by;

describe("Flash sale with cancellations", () => {
  it("lets exactly as many retrying losers win as were released, after the kept winners in claimed_by", async () => {
    const coupon = "cancellations";
    const stock = 5;
    expect((await A().createCoupon(coupon, stock)).status).toBe(201);
    const users = Array.from({ length: 50 }, (_, i) => `buyer-${i}`);
    const onReplica = (i: number) => cluster.clients[i % 3] as Client;

    const first = await Promise.all(users.map((user, i) => onReplica(i).claim(user, coupon)));
    expect(countStatus(first, 201)).toBe(stock);
    expect(countStatus(first, 409, "SOLD_OUT")).toBe(users.length - stock);
    const order = await claimedBy(coupon);
    expect([...order].sort()).toEqual(users.filter((_, i) => first[i]?.status === 201).sort());

    // Two orders cancelled, through different replicas, at the same time.
    const [keptFirst, cancelledOnB, keptSecond, cancelledOnC, keptThird] = order as [
      string,
      string,
      string,
      string,
      string,
    ];
    const kept = [keptFirst, keptSecond, keptThird];
    const released = await Promise.all([release(B(), coupon, cancelledOnB), release(C(), coupon, cancelledOnC)]);
    expect(released.map((r) => r.status)).toEqual([200, 200]);
    expect(released.map((r) => r.body.remaining_amount).sort()).toEqual([1, 2]);

    const losers = users.filter((_, i) => first[i]?.status !== 201);
    const retry: ApiResponse[] = await Promise.all(losers.map((user, i) => onReplica(i + 1).claim(user, coupon)));
    expect(countStatus(retry, 201)).toBe(2);
    expect(countStatus(retry, 409, "SOLD_OUT")).toBe(losers.length - 2);
    const newWinners = losers.filter((_, i) => retry[i]?.status === 201);

    const final = await claimedBy(coupon);
    expect(final.slice(0, 3)).toEqual(kept);
    expect(final.slice(3).sort()).toEqual(newWinners.sort());
    const [row] = await cluster.database.sql<{ holders: number; releases: number }[]>`
      select (select count(*)::int from claims where coupon_name = ${coupon}) as holders,
             (select count(*)::int from claim_releases where coupon_name = ${coupon}) as releases`;
    expect(row).toEqual({ holders: stock, releases: 2 });
    await expectStockInvariant(cluster.database.sql, coupon);
  }, 30_000);
});

describe("a release seen by the other replicas", () => {
  it("No replica answers SOLD_OUT from memory after a release for longer than the bound", async () => {
    const coupon = "bounded";
    await soldOutTo(coupon, ["h1", "h2"]);
    await Promise.all([answeredFromMemory(B(), coupon), answeredFromMemory(C(), coupon)]);

    const answers = await Promise.all([release(A(), coupon, "h1"), release(A(), coupon, "h2")]);
    const releasedAt = performance.now();
    expect(answers.map((r) => r.status)).toEqual([200, 200]);
    // One unit each: every replica stops at its first win.
    const waited = await Promise.all(
      [B(), C()].map(async (replica) => {
        let res: ApiResponse;
        do res = await freshClaim(replica, coupon);
        while (res.status !== 201 && performance.now() - releasedAt <= PROPAGATION_BOUND_MS);
        expect(res.status).toBe(201);
        return performance.now() - releasedAt;
      }),
    );
    for (const ms of waited) expect(ms).toBeLessThanOrEqual(PROPAGATION_BOUND_MS);
    expect((await A().getCoupon(coupon)).body.remaining_amount).toBe(0);
    await expectStockInvariant(cluster.database.sql, coupon);
  }, 30_000);

  it("none at all while its listening connection is down", async () => {
    const coupon = "cut-release";
    await soldOutTo(coupon, ["holder"]);
    await answeredFromMemory(C(), coupon);

    cluster.proxy.cut();
    try {
      await until(async () => (await metric(C(), "coupon_change_feed_up")) === 0, "C's feed down");
      const memoryWhileCut = await metric(C(), "coupon_claims_from_memory_total");
      const batchesWhileCut = await metric(C(), "coupon_claim_batches_total");
      // A release C cannot hear of: its next claim must not be told the stale SOLD_OUT.
      expect((await release(A(), coupon, "holder")).status).toBe(200);
      expect((await freshClaim(C(), coupon)).status).toBe(201);
      expect(await metric(C(), "coupon_claims_from_memory_total")).toBe(memoryWhileCut);
      expect(await metric(C(), "coupon_claim_batches_total")).toBe(batchesWhileCut + 1);
    } finally {
      cluster.proxy.restore();
    }
    await until(async () => (await metric(C(), "coupon_change_feed_up")) === 1, "C's feed back", 10_000);
    expect((await freshClaim(C(), coupon)).body.code).toBe("SOLD_OUT");
    await expectStockInvariant(cluster.database.sql, coupon);
  }, 30_000);
});

/** Claims by fresh users on `replica` until one is answered `code` from memory; 5 s at most. */
async function rememberedRefusal(replica: Client, coupon: string, code: string): Promise<void> {
  await until(async () => {
    const before = await metric(replica, "coupon_claims_from_memory_total");
    expect((await freshClaim(replica, coupon)).body.code).toBe(code);
    return (await metric(replica, "coupon_claims_from_memory_total")) > before;
  }, `${code} from memory`);
}

const patch = (replica: Client, coupon: string, json: unknown) =>
  replica.call("PATCH", `/api/coupons/${encodeURIComponent(coupon)}`, { json });

describe("a change answered only once no replica can answer what it replaced from memory", () => {
  // C's notifications held in transit, its connection open: C cannot know what changed, nor that it
  // cannot know; only its lease, run out, keeps it from answering the old state.
  it("a release through A has answered 200: C, hearing nothing, does not say SOLD_OUT", async () => {
    const coupon = "held-release";
    await soldOutTo(coupon, ["holder"]);
    await answeredFromMemory(C(), coupon);
    cluster.proxy.stall("to-client");
    try {
      expect((await release(A(), coupon, "holder")).status).toBe(200);
      expect((await freshClaim(C(), coupon)).status).toBe(201);
    } finally {
      cluster.proxy.restore();
    }
    await expectStockInvariant(cluster.database.sql, coupon);
  }, 30_000);

  it("a resume through A has answered 200: C, hearing nothing, does not say SALE_PAUSED", async () => {
    const coupon = "held-resume";
    expect((await A().createCoupon(coupon, 3)).status).toBe(201);
    expect((await patch(A(), coupon, { active: false })).status).toBe(200);
    await rememberedRefusal(C(), coupon, "SALE_PAUSED");
    cluster.proxy.stall("to-client");
    try {
      expect((await patch(A(), coupon, { active: true })).status).toBe(200);
      expect((await freshClaim(C(), coupon)).status).toBe(201);
    } finally {
      cluster.proxy.restore();
    }
    await expectStockInvariant(cluster.database.sql, coupon);
  }, 30_000);
});
