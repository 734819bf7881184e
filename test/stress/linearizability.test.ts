// Real histories must be linearizable: concurrent clients on three replicas answering from memory, a
// mixed load (claims, keyed claims and their replays, releases, reads, pauses and resumes, sales whose
// bounds pass during the run), one replica's database connections cut or stalled now and then (its
// answers 503: effect unknown). Each history is checked against the sequential rules by the checker of
// test/support/linearizability; a failure prints why and where the history was written. A build whose
// memory answers ignore the change feed must be caught. About 25 s in all on the CI machine.
import { describe, expect, it } from "bun:test";
import type { ChangeFeed } from "../../src/store/changes";
import { expectStockInvariant } from "../support/invariant";
import type { History } from "../support/linearizability/history";
import { runLoad } from "../support/linearizability/load";
import { createRecorder } from "../support/linearizability/recorder";
import { judge } from "../support/linearizability/report";
import { metric, replicasForSuite } from "../support/replicas";

/** The replicas' request deadline: short, so a stalled replica answers 503 within the run. */
const TIMEOUT_MS = 600;
/** Two fixed seeds, and one drawn anew each run (in the test's name, to run it again: LINEARIZABILITY_SEED). */
const SEEDS = [20_261_204, 9, Number(process.env.LINEARIZABILITY_SEED ?? Math.floor(Math.random() * 2 ** 31))];

/** "claim 409 SOLD_OUT", "release 200 replayed": what an operation got, to check the load reached each. */
function answersSeen(history: History): Set<string> {
  return new Set(
    history.operations.map((op) => {
      const a = op.answer;
      const code = (a?.body as { code?: string } | null)?.code;
      const replayed = a?.headers["idempotent-replayed"] ? " replayed" : "";
      return a ? `${op.request.kind} ${a.status}${code ? ` ${code}` : ""}${replayed}` : `${op.request.kind} none`;
    }),
  );
}

/** Checks `history`; on failure prints why and names the file the history was written to. */
function expectLinearizable(history: History, label: string): void {
  const verdict = judge(history, { label });
  if (!verdict.linearizable) console.log(verdict.report);
  expect({ linearizable: verdict.linearizable, file: verdict.file }).toEqual({ linearizable: true, file: undefined });
}

describe("histories of three replicas answering from memory, with connection cuts", () => {
  const cluster = replicasForSuite({ poolThroughProxy: true, app: { timeoutMs: TIMEOUT_MS } });

  for (const seed of SEEDS) {
    it(`are linearizable (seed ${seed})`, async () => {
      const recorder = await createRecorder(cluster.clients, cluster.database.sql);
      const prefix = `lin-${seed}`;
      const memoryBefore = await Promise.all(cluster.clients.map((c) => metric(c, "coupon_claims_from_memory_total")));
      await runLoad(recorder, {
        seed,
        prefix,
        durationMs: 6000,
        clients: 8,
        replicas: 3,
        schedules: true,
        faults: cluster.proxy,
        // Each release fences its coupon for the lease (no replica learns it meanwhile): fewer than the
        // default leave the memory answers this test is about most of the run.
        releases: 0.08,
        timeoutMs: TIMEOUT_MS,
      });
      const history = recorder.history(`three replicas, mixed load with cuts, seed ${seed}`);
      for (const name of ["stock", "keys", "ending", "sale"]) {
        await expectStockInvariant(cluster.database.sql, `${prefix}-${name}`);
      }
      // The load reached what it is for: memory answers, every rule, replays, unknown effects.
      const memory = await Promise.all(cluster.clients.map((c) => metric(c, "coupon_claims_from_memory_total")));
      expect(memory.some((n, i) => n > (memoryBefore[i] as number))).toBe(true);
      const seen = answersSeen(history);
      for (const answer of [
        "claim 201",
        "claim 409 ALREADY_CLAIMED",
        "claim 409 SOLD_OUT",
        "claim 409 SALE_PAUSED",
        "claim 409 SALE_NOT_STARTED",
        "claim 409 SALE_ENDED",
        "claim 201 replayed",
        "claim 503 SERVICE_UNAVAILABLE",
        "release 200",
        "release 404 CLAIM_NOT_FOUND",
        "create 201",
        "create 409 COUPON_EXISTS",
        "patch 200",
        "read 200",
      ]) {
        expect({ answer, seen: seen.has(answer) }).toEqual({ answer, seen: true });
      }
      expectLinearizable(history, `linearizability-${seed}`);
    }, 60_000);
  }
});

/** A feed whose changes never reach the app: its memory answers outlive every release made elsewhere. */
const deaf = (feed: ChangeFeed): ChangeFeed => ({
  get live() {
    return feed.live;
  },
  leased: () => feed.leased(),
  leaseMs: feed.leaseMs,
  clock: feed.clock,
  subscribe: (listener) => feed.subscribe({ change: () => {}, lost: () => listener.lost() }),
  close: () => feed.close(),
});

describe("a build whose memory answers ignore the change feed", () => {
  const cluster = replicasForSuite({ wrapFeed: deaf });

  it("gives histories the checker rejects", async () => {
    const recorder = await createRecorder(cluster.clients, cluster.database.sql);
    await runLoad(recorder, {
      seed: 4,
      prefix: "deaf",
      durationMs: 3000,
      // Rare releases: the coupons are seldom fenced, so the deaf replicas answer from memory a lot.
      releases: 0.03,
      clients: 8,
      replicas: 3,
      schedules: false,
      timeoutMs: TIMEOUT_MS,
    });
    const verdict = judge(recorder.history("replicas deaf to the change feed"), { label: "linearizability-deaf" });
    console.log(verdict.report);
    expect(verdict.linearizable).toBe(false);
  }, 60_000);
});
