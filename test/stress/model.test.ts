// Model-based concurrency test: random programs of create/claim/get operations, run over real HTTP
// in waves (the operations of a wave are concurrent; waves follow one another), checked against the
// sequential rules. Inside a wave the order is unknown, so each wave is checked for what must hold
// under every interleaving: its answers are those of SOME one-by-one order.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import fc from "fast-check";
import { serveForSuite } from "../support/app";
import { createTestDatabase, type TestDatabase } from "../support/database";
import type { ApiResponse, Client } from "../support/http";
import { expectStockInvariant } from "../support/invariant";
import { type ModelCoupon, modelClaim } from "../support/model";

let database: TestDatabase;
beforeAll(async () => {
  database = await createTestDatabase({ poolMax: 20 });
});
afterAll(() => database.drop());

const COUPONS = 3;
const RUNS = 15;
const USERS = 8;

type Op =
  | { kind: "create"; coupon: number; amount: number }
  | { kind: "claim"; coupon: number; user: number }
  | { kind: "get"; coupon: number };

const coupon = fc.nat(COUPONS - 1);
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("create"), coupon, amount: fc.integer({ min: 1, max: 8 }) }) },
  { weight: 12, arbitrary: fc.record({ kind: fc.constant("claim"), coupon, user: fc.nat(USERS - 1) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("get"), coupon }) },
) as fc.Arbitrary<Op>;
/** A program: 2..7 waves of 1..40 operations each. */
const program = fc.array(fc.array(op, { minLength: 1, maxLength: 40 }), { minLength: 2, maxLength: 7 });

/** What the test knows of a coupon once a wave is over: its stock and its holders in claim order. */
interface Known {
  amount: number;
  holders: string[];
}

type Answered<K extends Op["kind"]> = { op: Extract<Op, { kind: K }>; res: ApiResponse };

/** The claim outcome an answer stands for; anything else fails the test. */
function outcomeOf(res: ApiResponse): "created" | "not_found" | "already_claimed" | "sold_out" {
  if (res.status === 201) return "created";
  expect(res.headers.get("content-type")).toBe("application/problem+json");
  const refusals: Record<string, "not_found" | "already_claimed" | "sold_out"> = {
    "404 COUPON_NOT_FOUND": "not_found",
    "409 ALREADY_CLAIMED": "already_claimed",
    "409 SOLD_OUT": "sold_out",
  };
  const outcome = refusals[`${res.status} ${res.body.code}`];
  if (!outcome) throw new Error(`unexpected claim answer ${res.status} ${JSON.stringify(res.body)}`);
  return outcome;
}

// Every kind of answer the programs produced, so a generator that stopped reaching one is noticed.
const seen = new Set<string>();

/** Runs one program wave by wave and checks every answer; returns the coupons it created. */
async function runProgram(api: Client, prefix: string, waves: Op[][]): Promise<Map<string, Known>> {
  const name = (i: number) => `${prefix}-c${i}`;
  const user = (i: number) => `user-${i}`;
  const known = new Map<string, Known>();
  // Users whose claim on a coupon was decided (not answered 404): the final count is checked against them.
  const tried = new Map<string, Set<string>>();

  for (const wave of waves) {
    const answers = await Promise.all(
      wave.map(async (o) => {
        if (o.kind === "create") return { op: o, res: await api.createCoupon(name(o.coupon), o.amount) };
        if (o.kind === "claim") return { op: o, res: await api.claim(user(o.user), name(o.coupon)) };
        return { op: o, res: await api.getCoupon(name(o.coupon)) };
      }),
    );
    for (const { op, res } of answers) seen.add(`${op.kind} ${res.status} ${res.body.code ?? ""}`.trim());
    for (let c = 0; c < COUPONS; c++) {
      const mine = answers.filter((a) => a.op.coupon === c);
      const creates = mine.filter((a): a is Answered<"create"> => a.op.kind === "create");
      const claims = mine.filter((a): a is Answered<"claim"> => a.op.kind === "claim");
      const gets = mine.filter((a): a is Answered<"get"> => a.op.kind === "get");
      const before = known.get(name(c));

      // Creation: a name is created once; every other create of it, before or racing, is COUPON_EXISTS.
      let amount = before?.amount;
      const createdNow = creates.filter((a) => a.res.status === 201);
      for (const a of creates.filter((a) => a.res.status !== 201)) {
        expect([a.res.status, a.res.body.code]).toEqual([409, "COUPON_EXISTS"]);
      }
      if (before) expect(createdNow).toHaveLength(0);
      else expect(createdNow).toHaveLength(creates.length > 0 ? 1 : 0);
      if (createdNow[0]) {
        amount = createdNow[0].op.amount;
        expect(createdNow[0].res.body).toEqual({ name: name(c), amount, remaining_amount: amount });
      }

      // Claims, replayed through the sequential model in the one order that can explain a valid wave:
      // not-found answers (claims that beat the create), then the winners, then the refusals.
      const rank = { not_found: 0, created: 1, already_claimed: 2, sold_out: 3 };
      const decided = claims
        .map((a) => ({ userId: user(a.op.user), outcome: outcomeOf(a.res), res: a.res }))
        .sort((x, y) => rank[x.outcome] - rank[y.outcome]);
      const model: ModelCoupon | undefined =
        amount === undefined
          ? undefined
          : { remaining: amount - (before?.holders.length ?? 0), holders: new Set(before?.holders) };
      const remainingBefore = model?.remaining ?? 0;
      for (const claim of decided) {
        // A coupon that existed before the wave can never be unknown to a claim.
        const target = claim.outcome === "not_found" && !before ? undefined : model;
        expect({ user: claim.userId, outcome: claim.outcome }).toEqual({
          user: claim.userId,
          outcome: modelClaim(target, claim.userId),
        });
        if (claim.outcome === "created") {
          expect([claim.res.body.user_id, claim.res.body.coupon_name]).toEqual([claim.userId, name(c)]);
        }
        if (claim.outcome !== "not_found") {
          if (!tried.has(name(c))) tried.set(name(c), new Set());
          tried.get(name(c))?.add(claim.userId);
        }
      }
      if (amount === undefined || !model) {
        for (const g of gets) expect([g.res.status, g.res.body.code]).toEqual([404, "COUPON_NOT_FOUND"]);
        continue;
      }

      // The same facts, stated directly.
      const winners = decided.filter((d) => d.outcome === "created").map((d) => d.userId);
      const newcomers = new Set(decided.filter((d) => d.outcome !== "not_found").map((d) => d.userId));
      for (const holder of before?.holders ?? []) newcomers.delete(holder);
      expect(new Set(winners).size).toBe(winners.length); // at most one win per user
      expect(winners.length).toBe(Math.min(remainingBefore, newcomers.size));
      if (decided.some((d) => d.outcome === "sold_out")) expect(model.remaining).toBe(0);

      // Reads racing the wave see a consistent snapshot between the states before and after it.
      const holdersAfter = new Set([...(before?.holders ?? []), ...winners]);
      for (const g of gets) {
        if (!before && g.res.status === 404) continue; // read before the racing create
        expect(g.res.status).toBe(200);
        const { claimed_by, remaining_amount } = g.res.body as { claimed_by: string[]; remaining_amount: number };
        expect(g.res.body.amount).toBe(amount);
        expect(remaining_amount).toBe(amount - claimed_by.length);
        expect(claimed_by.slice(0, before?.holders.length ?? 0)).toEqual(before?.holders ?? []);
        for (const holder of claimed_by) expect(holdersAfter.has(holder)).toBe(true);
      }

      // Once the wave is over, the service holds exactly the modelled state.
      const read = await api.getCoupon(name(c));
      expect(read.status).toBe(200);
      const { claimed_by } = read.body as { claimed_by: string[] };
      expect(read.body.remaining_amount).toBe(model.remaining);
      expect(read.body.amount).toBe(amount);
      expect(claimed_by.slice(0, before?.holders.length ?? 0)).toEqual(before?.holders ?? []);
      expect([...claimed_by].sort()).toEqual([...model.holders].sort());
      known.set(name(c), { amount, holders: claimed_by });
    }
  }

  // Over the whole program: as many winners as stock allows among the users whose claim was decided.
  for (const [couponName, { amount, holders }] of known) {
    expect(holders.length).toBe(Math.min(amount, tried.get(couponName)?.size ?? 0));
  }
  return known;
}

for (const batchMax of [256, 1]) {
  describe(`random programs with CLAIM_BATCH_MAX=${batchMax}`, () => {
    const server = serveForSuite(() => database.handle.db, { batchMax });

    for (const seed of [20_261_121, 7]) {
      it(`answers every wave as some sequential order would, and ends in the modelled state (seed ${seed})`, async () => {
        let run = 0;
        await fc.assert(
          fc.asyncProperty(program, async (waves) => {
            const known = await runProgram(server.api, `model-${batchMax}-${seed}-${run++}`, waves);
            for (const [couponName, { holders }] of known) {
              await expectStockInvariant(database.sql, couponName);
              const rows = await database.sql<{ user_id: string }[]>`
                select user_id from claims where coupon_name = ${couponName} order by id`;
              expect(rows.map((row) => row.user_id)).toEqual(holders);
            }
          }),
          // Interleavings do not replay, so shrinking a failure would chase a different run: stop at once.
          { seed, numRuns: RUNS, endOnFailure: true },
        );
        expect(run).toBe(RUNS);
      });
    }
  });
}

describe("the random programs", () => {
  it("reached every answer a create, claim and read can give", () => {
    expect([...seen].sort()).toEqual([
      "claim 201",
      "claim 404 COUPON_NOT_FOUND",
      "claim 409 ALREADY_CLAIMED",
      "claim 409 SOLD_OUT",
      "create 201",
      "create 409 COUPON_EXISTS",
      "get 200",
      "get 404 COUPON_NOT_FOUND",
    ]);
  });
});
