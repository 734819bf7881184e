// The checker can fail: known non-linearizable histories are rejected, known linearizable ones (some
// only thanks to a 503 that took effect late) are accepted, and so is every history generated from the
// sequential rules themselves. No database: histories are written by hand or generated.
import { describe, expect, it } from "bun:test";
import { rmSync } from "node:fs";
import { toProblem } from "../../../src/http/problems";
import { checkHistory } from "./checker";
import { linearizableHistory } from "./generate";
import type { Answer, History, Operation, Request } from "./history";
import { readHistory } from "./history";
import { judge } from "./report";

const T = Date.UTC(2026, 11, 1, 9);
const at = (ms: number) => new Date(T + ms).toISOString();

let ids = 0;
/** An operation on coupon "c" sent at T+from and answered at T+to (null: no answer). */
function op(request: Request, from: number, to: number | null, answer: Answer | null, key?: string): Operation {
  return {
    id: ids++,
    coupon: "c",
    request,
    invokedAt: T + from,
    completedAt: to === null ? null : T + to,
    answer,
    key,
  };
}
const json = (status: number, body: unknown, headers: Record<string, string> = {}): Answer => ({
  status,
  body,
  headers: { "content-type": "application/json", ...headers },
});
const problem = (code: Parameters<typeof toProblem>[0], headers: Record<string, string> = {}): Answer => {
  const body = toProblem(code, "…", "/api/coupons/claim", `r${ids}`);
  return { status: body.status, body, headers: { "content-type": "application/problem+json", ...headers } };
};
const replayed = (answer: Answer): Answer => ({
  ...answer,
  body: { ...(answer.body as object), ...("request_id" in (answer.body as object) ? { request_id: "other" } : {}) },
  headers: { ...answer.headers, "idempotent-replayed": "true" },
});

const create = (amount: number, from: number, to: number, sale: { starts_at?: string; ends_at?: string } = {}) =>
  op(
    { kind: "create", amount, ...sale },
    from,
    to,
    json(201, { name: "c", amount, remaining_amount: amount, ...sale }, { location: "/api/coupons/c" }),
  );
const claim = (user: string, from: number, to: number | null, answer: Answer | null, key?: string) =>
  op({ kind: "claim", user }, from, to, answer, key);
const won = (user: string, atMs: number, seq = 1) =>
  json(201, { user_id: user, coupon_name: "c", claimed_at: at(atMs), seq });
const release = (user: string, from: number, to: number | null, answer: Answer | null, key?: string) =>
  op({ kind: "release", user }, from, to, answer, key);
const released = (user: string, atMs: number, remaining: number) =>
  json(200, { coupon_name: "c", user_id: user, released_at: at(atMs), remaining_amount: remaining });
const read = (from: number, to: number, amount: number, holders: string[], sale: Record<string, unknown> = {}) =>
  op(
    { kind: "read" },
    from,
    to,
    json(200, { name: "c", amount, remaining_amount: amount - holders.length, ...sale, claimed_by: holders }),
  );
const patch = (change: Omit<Extract<Request, { kind: "patch" }>, "kind">, from: number, to: number, body: unknown) =>
  op({ kind: "patch", ...change }, from, to, json(200, body));

const history = (operations: Operation[], toleranceMs = 1): History => ({ toleranceMs, operations });
const linearizable = (operations: Operation[], toleranceMs = 1) =>
  checkHistory(history(operations, toleranceMs)).every((v) => v.linearizable);

describe("the checker rejects", () => {
  it("a SOLD_OUT answered after a release completed and a read showed the unit back", () => {
    const ops = [
      create(1, 0, 1),
      claim("u1", 2, 4, won("u1", 3)),
      claim("u2", 5, 6, problem("SOLD_OUT")),
      release("u1", 7, 9, released("u1", 8, 1)),
      read(10, 11, 1, []),
      claim("u3", 12, 13, problem("SOLD_OUT")),
    ];
    expect(linearizable(ops)).toBe(false);
    expect(linearizable(ops.slice(0, 5))).toBe(true);
  });

  it("a claim that wins after the sale ended, and a SOLD_OUT after it ended (SALE_ENDED by the rules' order)", () => {
    const sale = { ends_at: at(50) };
    expect(linearizable([create(3, 0, 1, sale), claim("u1", 60, 62, won("u1", 61))])).toBe(false);
    const soldOut = [create(1, 0, 1, sale), claim("u1", 2, 4, won("u1", 3)), claim("u2", 60, 61, problem("SOLD_OUT"))];
    expect(linearizable(soldOut)).toBe(false);
  });

  it("a SALE_PAUSED answered after a resume answered", () => {
    const ops = [
      create(5, 0, 1),
      patch({ active: false }, 2, 3, { name: "c", amount: 5, remaining_amount: 5, active: false }),
      claim("u1", 4, 5, problem("SALE_PAUSED")),
      patch({ active: true }, 6, 7, { name: "c", amount: 5, remaining_amount: 5 }),
      claim("u2", 8, 9, problem("SALE_PAUSED")),
    ];
    expect(linearizable(ops)).toBe(false);
    expect(linearizable(ops.slice(0, 4))).toBe(true);
  });

  it("a replay whose headers or body differ from the first answer, or that is not marked", () => {
    const first = claim("u1", 2, 4, won("u1", 3), "k");
    const base = [create(5, 0, 1), first];
    const again = (answer: Answer) => claim("u1", 10, 11, answer, "k");
    expect(linearizable([...base, again(replayed(won("u1", 3)))])).toBe(true);
    expect(
      linearizable([
        ...base,
        again({ ...replayed(won("u1", 3)), headers: { ...replayed(won("u1", 3)).headers, "retry-after": "1" } }),
      ]),
    ).toBe(false);
    expect(linearizable([...base, again(replayed(won("u1", 5)))])).toBe(false);
    expect(linearizable([...base, again(won("u1", 3))])).toBe(false);
  });

  it("ALREADY_CLAIMED with a Retry-After (a retry cannot change it)", () => {
    const sale = { starts_at: at(10) };
    const ops = [
      create(5, 0, 1, sale),
      claim("u1", 20, 22, won("u1", 21)),
      claim("u1", 30, 31, problem("ALREADY_CLAIMED")),
    ];
    expect(linearizable(ops)).toBe(true);
    ops[2] = claim("u1", 30, 31, problem("ALREADY_CLAIMED", { "retry-after": "3600" }));
    expect(linearizable(ops)).toBe(false);
  });

  it("a winner's seq that is not its place among the winners: skipped, repeated, or reused after a release", () => {
    const two = [create(5, 0, 1), claim("u1", 2, 3, won("u1", 2.5))];
    expect(linearizable([...two, claim("u2", 4, 5, won("u2", 4.5, 2))])).toBe(true);
    expect(linearizable([...two, claim("u2", 4, 5, won("u2", 4.5, 3))])).toBe(false);
    expect(linearizable([...two, claim("u2", 4, 5, won("u2", 4.5, 1))])).toBe(false);
    const afterRelease = [...two, release("u1", 4, 5, released("u1", 4.5, 5))];
    expect(linearizable([...afterRelease, claim("u1", 6, 7, won("u1", 6.5, 2))])).toBe(true);
    expect(linearizable([...afterRelease, claim("u1", 6, 7, won("u1", 6.5, 1))])).toBe(false);
    // Racing winners: each order gives the seqs in it, so either pair fits; both the same seq does not.
    const racing = (a: number, b: number) => [
      create(5, 0, 1),
      claim("u1", 2, 10, won("u1", 5, a)),
      claim("u2", 2, 10, won("u2", 5, b)),
    ];
    expect(linearizable(racing(1, 2))).toBe(true);
    expect(linearizable(racing(2, 1))).toBe(true);
    expect(linearizable(racing(1, 1))).toBe(false);
  });

  it("claimers read in another order than they won", () => {
    const ops = [
      create(5, 0, 1),
      claim("u1", 2, 3, won("u1", 2.5)),
      claim("u2", 4, 5, won("u2", 4.5, 2)),
      read(6, 7, 5, ["u2", "u1"]),
    ];
    expect(linearizable(ops)).toBe(false);
  });

  it("a claimed_at outside its request's interval, a Retry-After that counts to no instant of its request", () => {
    expect(linearizable([create(5, 0, 1), claim("u1", 10, 12, won("u1", 20))])).toBe(false);
    const sale = { starts_at: at(5000) };
    expect(
      linearizable([create(5, 0, 1, sale), claim("u1", 10, 12, problem("SALE_NOT_STARTED", { "retry-after": "5" }))]),
    ).toBe(true);
    expect(
      linearizable([create(5, 0, 1, sale), claim("u1", 10, 12, problem("SALE_NOT_STARTED", { "retry-after": "2" }))]),
    ).toBe(false);
  });

  it("a coupon created twice, a 500, an IDEMPOTENCY_KEY_IN_USE with no other request of its key in flight", () => {
    expect(linearizable([create(5, 0, 1), create(5, 2, 3)])).toBe(false);
    expect(linearizable([create(5, 0, 1), claim("u1", 2, 3, problem("INTERNAL_ERROR"))])).toBe(false);
    const inUse = problem("IDEMPOTENCY_KEY_IN_USE", { "retry-after": "1" });
    expect(linearizable([create(5, 0, 1), claim("u1", 2, 3, won("u1", 2.5), "k"), claim("u1", 4, 5, inUse, "k")])).toBe(
      false,
    );
  });

  it("a 503 used to explain an answer given before the 503's request was sent", () => {
    const ops = [
      create(1, 0, 1),
      claim("u2", 5, 8, problem("SOLD_OUT")),
      claim("u1", 10, 20, problem("SERVICE_UNAVAILABLE")),
    ];
    expect(linearizable(ops)).toBe(false);
  });

  it("the replay of a 503 that went through, naming an instant before that request was sent", () => {
    const ops = [
      create(5, 0, 1),
      claim("u1", 10, 12, problem("SERVICE_UNAVAILABLE"), "k"),
      claim("u1", 30, 35, replayed(won("u1", 5)), "k"),
    ];
    expect(linearizable(ops)).toBe(false);
  });
});

describe("the checker accepts", () => {
  it("the later of two racing claims winning the last unit", () => {
    expect(
      linearizable([create(1, 0, 1), claim("u1", 2, 10, problem("SOLD_OUT")), claim("u2", 3, 6, won("u2", 5))]),
    ).toBe(true);
  });

  it("a release answered 503 that took effect after its answer, as two later reads show", () => {
    const ops = [
      create(1, 0, 1),
      claim("u1", 2, 3, won("u1", 2.5)),
      release("u1", 10, 15, problem("SERVICE_UNAVAILABLE")),
      read(20, 22, 1, ["u1"]),
      read(40, 42, 1, []),
      claim("u2", 50, 51, won("u2", 50.5, 2)),
    ];
    expect(linearizable(ops)).toBe(true);
    // Without the 503 nothing explains the second read.
    expect(linearizable(ops.filter((o) => o.request.kind !== "release"))).toBe(false);
  });

  it("a keyed claim answered 503 whose retry gets the replay of the claim it made, and one with no answer at all", () => {
    const ops = [
      create(5, 0, 1),
      claim("u1", 10, 12, problem("SERVICE_UNAVAILABLE"), "k"),
      claim("u1", 30, 35, replayed(won("u1", 11)), "k"),
    ];
    expect(linearizable(ops)).toBe(true);
    expect(linearizable([create(1, 0, 1), claim("u1", 2, null, null), claim("u2", 5, 6, problem("SOLD_OUT"))])).toBe(
      true,
    );
  });

  it("a key given up by SALE_PAUSED executing again, and 422 for another request with a held key", () => {
    const paused = { name: "c", amount: 5, remaining_amount: 5, active: false };
    const ops = [
      create(5, 0, 1),
      patch({ active: false }, 2, 3, paused),
      claim("u1", 4, 5, problem("SALE_PAUSED"), "k"),
      patch({ active: true }, 6, 7, { name: "c", amount: 5, remaining_amount: 5 }),
      claim("u1", 8, 9, won("u1", 8.5), "k"),
      release("u1", 10, 11, problem("IDEMPOTENCY_KEY_REUSED"), "k"),
      release("u1", 12, 13, released("u1", 12.5, 5), "r"),
      release("u1", 14, 15, replayed(released("u1", 12.5, 5)), "r"),
    ];
    expect(linearizable(ops)).toBe(true);
  });

  it("a SOLD_OUT from memory between the decision of a batch that released and took the unit again and its commit", () => {
    const ops = [
      create(1, 0, 1),
      claim("u1", 2, 3, won("u1", 2.5)),
      release("u1", 10, 20, released("u1", 11, 1)),
      claim("u2", 10, 20, won("u2", 11, 2)),
      claim("u3", 15, 16, problem("SOLD_OUT")),
      read(21, 22, 1, ["u2"]),
    ];
    expect(linearizable(ops)).toBe(true);
  });

  it("answers at a bound within the stated tolerance, and not beyond it", () => {
    const ops = [create(5, 0, 1, { ends_at: at(50) }), claim("u1", 49.2, 49.5, problem("SALE_ENDED"))];
    expect(linearizable(ops, 1)).toBe(true);
    expect(linearizable(ops, 0)).toBe(false);
  });

  it("IDEMPOTENCY_KEY_IN_USE while another request of its key is in flight", () => {
    const inUse = problem("IDEMPOTENCY_KEY_IN_USE", { "retry-after": "1" });
    expect(
      linearizable([create(5, 0, 1), claim("u1", 2, 30, won("u1", 20), "k"), claim("u1", 4, 10, inUse, "k")]),
    ).toBe(true);
  });
});

/** Fixed seeds, and three random ones (printed). */
const SEEDS = [
  ...Array.from({ length: 60 }, (_, i) => i + 1),
  ...Array.from({ length: 3 }, () => Math.floor(Math.random() * 2 ** 31)),
];

describe("histories generated from the sequential rules", () => {
  it(`are all linearizable (seeds 1..60 and ${SEEDS.slice(60).join(", ")})`, () => {
    for (const seed of SEEDS) {
      const generated = linearizableHistory(seed, {
        clients: 1 + (seed % 6),
        operations: 30 + (seed % 90),
        coupons: 1 + (seed % 3),
      });
      const verdict = judge(generated, { label: `generated-${seed}` });
      if (!verdict.linearizable) console.log(`seed ${seed}:\n${verdict.report}`);
      expect({ seed, linearizable: verdict.linearizable }).toEqual({ seed, linearizable: true });
    }
  });

  it("reach every answer of a claim, replays, reuse and 503s that went through or not", () => {
    const answers = new Set(
      SEEDS.slice(0, 60).flatMap((seed) =>
        linearizableHistory(seed).operations.map((o) => {
          const code = (o.answer?.body as { code?: string } | null)?.code;
          const replay = o.answer?.headers["idempotent-replayed"] ? "replayed" : undefined;
          return [o.request.kind, o.answer?.status ?? "none", code, replay].filter(Boolean).join(" ");
        }),
      ),
    );
    for (const answer of [
      "claim 201",
      "claim 201 replayed",
      "claim 409 SOLD_OUT",
      "claim 409 SALE_ENDED",
      "claim 409 SALE_NOT_STARTED",
      "claim 409 SALE_PAUSED",
      "claim 409 ALREADY_CLAIMED",
      "claim 422 IDEMPOTENCY_KEY_REUSED",
      "claim 503 SERVICE_UNAVAILABLE",
      "claim none",
      "release 200",
      "release 404 CLAIM_NOT_FOUND",
      "patch 200",
      "patch 400 VALIDATION_FAILED",
      "read 200",
    ]) {
      expect({ answer, seen: answers.has(answer) }).toEqual({ answer, seen: true });
    }
  });
});

describe("a failing history", () => {
  it("is written to a file the replay script checks again, naming the operation that does not fit", () => {
    const ops = [
      create(1, 0, 1),
      claim("u1", 2, 4, won("u1", 3)),
      release("u1", 7, 9, released("u1", 8, 1)),
      claim("u3", 12, 13, problem("SOLD_OUT")),
    ];
    const verdict = judge(history(ops), { label: "checker-test" });
    expect(verdict.linearizable).toBe(false);
    expect(verdict.report).toContain(`#${ops[3]?.id} claim {"user":"u3"}`);
    expect(verdict.report).toContain("answered 409 SOLD_OUT; the rules give 201");
    const file = verdict.file as string;
    expect(readHistory(file)).toEqual(history(ops));
    const replay = Bun.spawnSync([process.execPath, "scripts/check-history.ts", file]);
    expect(replay.exitCode).toBe(1);
    expect(replay.stdout.toString()).toContain("answered 409 SOLD_OUT; the rules give 201");
    rmSync(file);
  });
});
