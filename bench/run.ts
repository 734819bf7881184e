// `bun run bench`: builds the service, then measures claim throughput and latency with wrk against a
// throwaway PostgreSQL database, and checks that no claim was lost or invented. See docs/benchmarks.md.
// Env: BENCH_DURATION (default 10s per measured run), BENCH_WARMUP (default 2s, 0 = none),
// BENCH_DATABASE_URL (admin URL, default postgres://postgres@127.0.0.1:5432/postgres),
// OTEL_EXPORTER_OTLP_PROTOCOL (the tracing rows' encoding, default http/protobuf as the service's),
// BENCH_REDIS_URL (the Redis of the Redis+Lua peer's rows, default redis://127.0.0.1:6379; without one
// answering, those rows are printed as skipped).
import { RedisClient } from "bun";
import postgres from "postgres";
import {
  type BenchDatabase,
  build,
  createBenchDatabase,
  postJson,
  type Service,
  startPeer,
  startService,
} from "./service";
import { type CpuShare, describeMachine, killWrk, parseSeconds, requireWrk, runWrk, type WrkResult } from "./wrk";

type Kind = "hot" | "soldout" | "live";

interface Scenario {
  id: string;
  label: string;
  kind: Kind;
  connections: number;
  /** CLAIM_BATCH_MAX for the service; undefined = its default. */
  batchMax?: number;
  /** Every claim carries its own Idempotency-Key. */
  keys?: boolean;
  /** Traces exported over OTLP/HTTP to a sink in this process, sampling this ratio of requests. */
  tracing?: number;
  /** Measures the Redis+Lua peer (bench/redis-peer.ts) instead of the service. */
  peer?: true;
}

/** One wrk run, and the coupon it claimed (with the claims made before it). */
interface Run {
  scenario: Scenario;
  phase: "warmup" | "measure";
  coupon?: string;
  seeded: number;
  result: WrkResult;
  cpu: CpuShare;
}

const HOT_STOCK = 100_000_000;
/** CPU (% of one core) used by programs outside the benchmark above which the figures are flagged. */
const OTHER_CPU_WARN = 20;

const SCENARIOS: Scenario[] = [
  { id: "hot_c64_b1", label: "hot coupon", kind: "hot", connections: 64, batchMax: 1 },
  { id: "hot_c64", label: "hot coupon", kind: "hot", connections: 64 },
  { id: "hot_c256_b1", label: "hot coupon", kind: "hot", connections: 256, batchMax: 1 },
  { id: "hot_c256", label: "hot coupon", kind: "hot", connections: 256 },
  {
    id: "hot_c256_keys",
    label: "hot coupon, Idempotency-Key on every claim",
    kind: "hot",
    connections: 256,
    keys: true,
  },
  { id: "hot_c256_trace100", label: "hot coupon, traces at 100%", kind: "hot", connections: 256, tracing: 1 },
  { id: "hot_c256_trace1", label: "hot coupon, traces at 1%", kind: "hot", connections: 256, tracing: 0.01 },
  { id: "soldout_c256", label: "sold-out flood", kind: "soldout", connections: 256 },
  { id: "live_c256", label: "GET /health/live", kind: "live", connections: 256 },
  { id: "peer_hot_c256", label: "Redis+Lua peer: hot coupon", kind: "hot", connections: 256, peer: true },
  { id: "peer_soldout_c256", label: "Redis+Lua peer: sold-out flood", kind: "soldout", connections: 256, peer: true },
  { id: "bare_live_c256", label: "bare Bun.serve: GET /health/live", kind: "live", connections: 256, peer: true },
];

/** The Redis behind the peer's rows: its URL, and its server's pid for its CPU share. */
interface PeerRedis {
  url: string;
  pid: number;
  /** How it keeps acknowledged writes (CONFIG appendonly / appendfsync), for the table's note. */
  durability: string;
}

/** The answer each kind of run should get; anything else is an error. */
const EXPECTED: Record<Kind, string> = { hot: "201", soldout: "409 SOLD_OUT", live: "200" };

/** The service currently running, so an interrupt can stop it. */
let current: Service | undefined;
/** Set on Ctrl-C/SIGTERM: the failures that follow are the interrupt's doing, not the service's. */
let interrupted = false;

let sink: { url: string; bytes: number; exports: number } | undefined;
/** An OTLP/HTTP receiver that reads and drops what it is sent (started once, on first use). */
function traceSink() {
  if (!sink) {
    const state = { url: "", bytes: 0, exports: 0 };
    const server = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      async fetch(request) {
        state.bytes += (await request.arrayBuffer()).byteLength;
        state.exports++;
        // An empty ExportTraceServiceResponse in the encoding it was sent in.
        const protobuf = request.headers.get("content-type") === "application/x-protobuf";
        return protobuf ? new Response(new Uint8Array(0)) : Response.json({});
      },
    });
    state.url = `http://127.0.0.1:${server.port}`;
    sink = state;
  }
  return sink;
}

/** Answers per second with the expected status (409 SOLD_OUT counts for the sold-out flood). */
function throughput(run: Run): number {
  return (run.result.statuses[EXPECTED[run.scenario.kind]] ?? 0) / (run.result.duration_us / 1e6);
}

/** Socket errors plus every answer with another status than expected (503, 5xx, unexpected 409…). */
function errorCount(run: Run): number {
  const { connect, read, write, timeout } = run.result.socket_errors;
  const expected = EXPECTED[run.scenario.kind];
  const unexpected = Object.entries(run.result.statuses).filter(([status]) => status !== expected);
  return connect + read + write + timeout + unexpected.reduce((sum, [, count]) => sum + count, 0);
}

/** Creates the run's coupon through the API (sold out by one claim for the flood); returns name and seeded claims. */
async function prepareCoupon(service: Service, scenario: Scenario, phase: string) {
  if (scenario.kind === "live") return { coupon: undefined, seeded: 0 };
  const coupon = `${scenario.id}_${phase}`;
  const amount = scenario.kind === "hot" ? HOT_STOCK : 1;
  await postJson(`${service.baseUrl}/api/coupons`, { name: coupon, amount }, 201);
  if (scenario.kind === "hot") return { coupon, seeded: 0 };
  await postJson(`${service.baseUrl}/api/coupons/claim`, { user_id: "seed", coupon_name: coupon }, 201);
  return { coupon, seeded: 1 };
}

/** Starts a service for the scenario, runs wrk (warm-up, then measured), and stops it with SIGTERM. */
async function runScenario(
  scenario: Scenario,
  database: BenchDatabase,
  seconds: number,
  warmup: number,
  redis?: PeerRedis,
): Promise<Run[]> {
  const { url: databaseUrl, name: databaseName } = database;
  const settings: Record<string, string> =
    scenario.batchMax === undefined ? {} : { CLAIM_BATCH_MAX: String(scenario.batchMax) };
  if (scenario.tracing !== undefined)
    Object.assign(settings, {
      OTEL_EXPORTER_OTLP_ENDPOINT: traceSink().url,
      OTEL_TRACES_SAMPLER: "parentbased_traceidratio",
      OTEL_TRACES_SAMPLER_ARG: String(scenario.tracing),
      OTEL_EXPORTER_OTLP_PROTOCOL: process.env.OTEL_EXPORTER_OTLP_PROTOCOL || "http/protobuf",
    });
  const service = scenario.peer
    ? await startPeer((redis as PeerRedis).url, databaseName)
    : await startService(databaseUrl, settings);
  current = service;
  const runs: Run[] = [];
  try {
    const phases = warmup > 0 ? (["warmup", "measure"] as const) : (["measure"] as const);
    for (const phase of phases) {
      const { coupon, seeded } = await prepareCoupon(service, scenario, phase);
      const path = scenario.kind === "live" ? "/health/live" : "/api/coupons/claim";
      const { result, cpu } = await runWrk({
        url: `${service.baseUrl}${path}`,
        connections: scenario.connections,
        seconds: phase === "warmup" ? warmup : seconds,
        args: coupon ? [coupon, ...(scenario.keys ? ["keys"] : [])] : [],
        servicePid: service.pid,
        databaseName,
        storePid: scenario.peer ? redis?.pid : undefined,
      });
      runs.push({ scenario, phase, coupon, seeded, result, cpu });
    }
  } catch (error) {
    service.kill();
    current = undefined;
    throw error;
  }
  await service.stop();
  current = undefined;
  return runs;
}

/** Answers that are impossible for a correct service: ALREADY_CLAIMED for fresh users, 409 on a huge stock, a 201 after sold out, 500. */
function checkAnswers(runs: Run[]): string[] {
  const problems: string[] = [];
  for (const run of runs) {
    const name = `${run.scenario.id}/${run.phase}`;
    const count = (status: string) => run.result.statuses[status] ?? 0;
    if (count("409 ALREADY_CLAIMED") > 0)
      problems.push(`${name}: ${count("409 ALREADY_CLAIMED")} ALREADY_CLAIMED for distinct users`);
    if (run.scenario.kind === "hot" && count("409 SOLD_OUT") > 0) problems.push(`${name}: SOLD_OUT with stock left`);
    if (run.scenario.kind === "soldout" && count("201") > 0)
      problems.push(`${name}: ${count("201")} claims created after sold out`);
    if (count("500 INTERNAL_ERROR") > 0) problems.push(`${name}: ${count("500 INTERNAL_ERROR")} internal errors`);
    if (run.result.requests === 0) problems.push(`${name}: no answer at all`);
  }
  return problems;
}

/** Stock ledger per coupon (remaining + claims = amount) and wrk's 201s against the claim rows. */
async function checkLedger(databaseUrl: string, runs: Run[]): Promise<string[]> {
  const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  try {
    const rows = await sql<{ name: string; amount: number; remaining: number; claims: number }[]>`
      select c.name, c.amount, c.remaining_amount as remaining, count(cl.id)::int as claims
      from coupons c left join claims cl on cl.coupon_name = c.name
      group by c.name order by c.name`;
    const problems: string[] = [];
    console.log("\nCorrectness (per coupon): amount = remaining + claim rows; claim rows = seed + wrk 201s");
    for (const row of rows) {
      const run = runs.find((candidate) => candidate.coupon === row.name);
      const created = run ? (run.result.statuses["201"] ?? 0) : 0;
      const seeded = run?.seeded ?? 0;
      const unanswered = run?.result.unanswered ?? 0;
      const ledgerOk = row.remaining + row.claims === row.amount;
      // A claim committed while wrk was stopping has a row but no counted 201: allow up to `unanswered`.
      const extra = row.claims - seeded - created;
      const countOk = run !== undefined && extra >= 0 && extra <= unanswered;
      console.log(
        `  ${ledgerOk && countOk ? "PASS" : "FAIL"} ${row.name}: amount ${row.amount} = remaining ${row.remaining} + claims ${row.claims}` +
          ` (${ledgerOk ? "ok" : "VIOLATED"}); claims ${row.claims} = seed ${seeded} + 201s ${created}` +
          (extra === 0
            ? " exactly"
            : ` + ${extra} committed while in flight at wrk's stop (unanswered: ${unanswered})`),
      );
      if (!ledgerOk)
        problems.push(`${row.name}: remaining ${row.remaining} + claims ${row.claims} != amount ${row.amount}`);
      if (!countOk)
        problems.push(
          `${row.name}: ${row.claims} claim rows for ${seeded} seeded + ${created} 201s (${unanswered} unanswered)`,
        );
    }
    for (const run of runs) {
      if (run.coupon && !run.scenario.peer && !rows.some((row) => row.name === run.coupon))
        problems.push(`${run.coupon}: coupon missing`);
    }
    // Every claim made with a key stored its answer in the same transaction: one key row per claim row.
    for (const run of runs.filter((candidate) => candidate.scenario.keys && candidate.coupon)) {
      const coupon = run.coupon as string;
      const [keys] = await sql<{ count: number }[]>`
        select count(*)::int as count from idempotency_keys where key like ${`${coupon}-t%`} and outcome = 'created'`;
      const claims = rows.find((row) => row.name === coupon)?.claims ?? -1;
      const ok = keys?.count === claims;
      console.log(`  ${ok ? "PASS" : "FAIL"} ${coupon}: stored keys ${keys?.count} = claim rows ${claims}`);
      if (!ok) problems.push(`${coupon}: ${keys?.count} stored keys for ${claims} claim rows`);
    }
    return problems;
  } finally {
    await sql.end();
  }
}

/** The peer's ledger in Redis, per coupon: stock + holders = amount, holders = seed + wrk's 201s. */
async function checkPeerLedger(redis: PeerRedis, prefix: string, runs: Run[]): Promise<string[]> {
  const client = new RedisClient(redis.url);
  const problems: string[] = [];
  try {
    for (const run of runs.filter((candidate) => candidate.scenario.peer && candidate.coupon)) {
      const coupon = run.coupon as string;
      const amount = run.scenario.kind === "hot" ? HOT_STOCK : 1;
      const stock = Number(await client.send("GET", [`${prefix}:{${coupon}}:stock`]));
      const holders = Number(await client.send("SCARD", [`${prefix}:{${coupon}}:holders`]));
      const created = run.result.statuses["201"] ?? 0;
      const extra = holders - run.seeded - created;
      const ok = stock + holders === amount && extra >= 0 && extra <= run.result.unanswered;
      console.log(
        `  ${ok ? "PASS" : "FAIL"} peer ${coupon}: amount ${amount} = stock ${stock} + holders ${holders}; holders = seed ${run.seeded} + 201s ${created}${extra === 0 ? " exactly" : ` + ${extra} in flight at wrk's stop`}`,
      );
      if (!ok)
        problems.push(`peer ${coupon}: stock ${stock} + holders ${holders} for amount ${amount}, ${created} 201s`);
    }
  } finally {
    client.close();
  }
  return problems;
}

/** Deletes the peer's keys of this run (all under `prefix`), however the run ended. */
async function dropPeerKeys(redis: PeerRedis, prefix: string): Promise<void> {
  const client = new RedisClient(redis.url);
  try {
    const keys = (await client.send("KEYS", [`${prefix}:*`])) as string[];
    if (keys.length > 0) await client.send("DEL", keys);
  } finally {
    client.close();
  }
}

/** The Redis at `url` for the peer's rows, or undefined when none answers there. */
async function peerRedis(url: string): Promise<PeerRedis | undefined> {
  const client = new RedisClient(url, { connectionTimeout: 1000, autoReconnect: false });
  try {
    const info = String(await client.send("INFO", ["server"]));
    const pid = Number(/process_id:(\d+)/.exec(info)?.[1]);
    // RESP3 answers CONFIG GET with a map, RESP2 with [name, value].
    const config = async (key: string) => {
      const reply = (await client.send("CONFIG", ["GET", key])) as Record<string, string> | string[];
      return (Array.isArray(reply) ? reply[1] : reply[key]) ?? "unknown";
    };
    const durability = `appendonly ${await config("appendonly")}, appendfsync ${await config("appendfsync")}`;
    return { url, pid, durability };
  } catch {
    return undefined;
  } finally {
    client.close();
  }
}

/** Milliseconds with one decimal, from microseconds. */
const ms = (us: number) => (us / 1000).toFixed(1);

/** Prints the measured runs as a Markdown table (pasteable into docs/benchmarks.md), and the rows skipped. */
function printTable(runs: Run[], skipped: Scenario[], skippedWhy: string): void {
  const header = [
    "scenario",
    "connections",
    "CLAIM_BATCH_MAX",
    "req/s (claims/s)",
    "p50 ms",
    "p99 ms",
    "errors",
    "CPU % bun / store / wrk / other",
  ];
  const lines = runs.map((run) => [
    run.scenario.label,
    String(run.scenario.connections),
    run.scenario.kind === "live" || run.scenario.peer
      ? "-"
      : run.scenario.batchMax === undefined
        ? "default"
        : String(run.scenario.batchMax),
    Math.round(throughput(run)).toLocaleString("en-US"),
    ms(run.result.p50_us),
    ms(run.result.p99_us),
    `${errorCount(run)}${errorDetail(run)}`,
    `${run.cpu.service} / ${run.cpu.postgres} / ${run.cpu.wrk} / ${run.cpu.other}`,
  ]);
  console.log(`\n| ${header.join(" | ")} |\n|${header.map(() => " --- ").join("|")}|`);
  for (const line of lines) console.log(`| ${line.join(" | ")} |`);
  for (const scenario of skipped)
    console.log(`| ${scenario.label} | ${scenario.connections} | - | skipped (${skippedWhy}) | - | - | - | - |`);
}

/** Names the unexpected statuses and socket errors behind an error count, e.g. " (503 SERVICE_UNAVAILABLE: 12)". */
function errorDetail(run: Run): string {
  const expected = EXPECTED[run.scenario.kind];
  const parts = Object.entries(run.result.statuses)
    .filter(([status]) => status !== expected)
    .map(([status, count]) => `${status}: ${count}`);
  for (const [kind, count] of Object.entries(run.result.socket_errors))
    if (count > 0) parts.push(`socket ${kind}: ${count}`);
  return parts.length > 0 ? ` (${parts.join(", ")})` : "";
}

/** Prints each performance target with its measured figure and HOLDS or MISSED (never fails the run). */
function printTargets(runs: Run[]): void {
  const find = (id: string) => runs.find((run) => run.scenario.id === id);
  const verdict = (ok: boolean) => (ok ? "HOLDS" : "MISSED");
  console.log("\nTargets");
  for (const connections of [64, 256]) {
    const batched = find(`hot_c${connections}`);
    const single = find(`hot_c${connections}_b1`);
    if (!batched || !single) continue;
    const ratio = throughput(batched) / throughput(single);
    console.log(
      `  hot coupon @${connections}: default / CLAIM_BATCH_MAX=1 = ${ratio.toFixed(2)}x (target >= 3x) ${verdict(ratio >= 3)}`,
    );
  }
  const flood = find("soldout_c256");
  const live = find("live_c256");
  if (flood && live) {
    const ratio = throughput(flood) / throughput(live);
    console.log(
      `  sold-out flood / GET /health/live @256 = ${ratio.toFixed(2)}x (target >= 0.5x) ${verdict(ratio >= 0.5)}`,
    );
  }
  const keyed = find("hot_c256_keys");
  const plain = find("hot_c256");
  if (keyed && plain) {
    const ratio = throughput(keyed) / throughput(plain);
    console.log(
      `  hot coupon @256 with / without Idempotency-Key = ${ratio.toFixed(2)}x (target >= 0.7x) ${verdict(ratio >= 0.7)}`,
    );
  }
  for (const [id, label] of [
    ["hot_c256_trace100", "100%"],
    ["hot_c256_trace1", "1%"],
  ] as const) {
    const traced = find(id);
    if (traced && plain)
      console.log(
        `  hot coupon @256 with traces at ${label} / without = ${(throughput(traced) / throughput(plain)).toFixed(2)}x (the cost of tracing; no target)`,
      );
  }
  if (sink) console.log(`  trace sink received ${sink.exports} exports, ${(sink.bytes / 1e6).toFixed(1)} MB`);
  const hot = find("hot_c256");
  if (hot) {
    const p99 = hot.result.p99_us / 1000;
    console.log(`  hot coupon @256 default: p99 = ${p99.toFixed(1)} ms (target <= 25 ms) ${verdict(p99 <= 25)}`);
  }
  // Against what users pick instead: the Redis+Lua peer and a bare Bun.serve, in the same run.
  const against = (id: string, peerId: string, label: string, target: number) => {
    const mine = find(id);
    const theirs = find(peerId);
    if (!mine || !theirs) return;
    const ratio = throughput(mine) / throughput(theirs);
    console.log(`  ${label} = ${ratio.toFixed(2)}x (target >= ${target}x) ${verdict(ratio >= target)}`);
  };
  against("hot_c256", "peer_hot_c256", "hot coupon @256 / Redis+Lua peer", 1);
  against("soldout_c256", "peer_soldout_c256", "sold-out flood @256 / Redis+Lua peer", 1);
  against("soldout_c256", "bare_live_c256", "sold-out flood @256 / bare Bun.serve trivial route", 0.5);
  against("live_c256", "bare_live_c256", "GET /health/live @256 / bare Bun.serve trivial route", 0.8);
}

/** Warns when other programs took a noticeable share of the CPU during a run: its figures are then low. */
function warnIfBusy(runs: Run[]): void {
  const busy = runs.filter((run) => run.cpu.other >= OTHER_CPU_WARN);
  if (busy.length === 0) return;
  const list = busy.map((run) => `${run.scenario.id} (${run.cpu.other}%)`).join(", ");
  console.log(
    `\nWARNING: other processes used >= ${OTHER_CPU_WARN}% of a core during ${list}; re-run on a quiet machine.`,
  );
}

/** Stops the running service and drops the database on Ctrl-C or SIGTERM, then exits 130. */
function cleanUpOnInterrupt(database: BenchDatabase): void {
  const handler = async (signal: string) => {
    interrupted = true;
    console.error(`\nbench: ${signal}, cleaning up`);
    killWrk();
    current?.kill();
    await database.drop().catch(() => {});
    process.exit(130);
  };
  process.once("SIGINT", () => void handler("SIGINT"));
  process.once("SIGTERM", () => void handler("SIGTERM"));
}

/** The whole benchmark; resolves to the exit code (1 on a correctness violation). */
async function main(): Promise<number> {
  requireWrk();
  const seconds = parseSeconds(process.env.BENCH_DURATION || "10s", "BENCH_DURATION");
  const warmup = parseSeconds(process.env.BENCH_WARMUP || "2s", "BENCH_WARMUP");
  if (seconds < 1) throw new Error("BENCH_DURATION must be at least 1s");
  const adminUrl = process.env.BENCH_DATABASE_URL || "postgres://postgres@127.0.0.1:5432/postgres";
  const database = await createBenchDatabase(adminUrl);
  cleanUpOnInterrupt(database);
  let redis: PeerRedis | undefined;
  try {
    const machine = describeMachine(database.serverVersion).map((line) => `  ${line}`);
    console.log(`Machine\n${machine.join("\n")}\n`);
    await build();
    console.log(`\nDatabase ${database.name}; wrk -t2, ${seconds}s per measured run after ${warmup}s of warm-up`);
    const runs: Run[] = [];
    const redisUrl = process.env.BENCH_REDIS_URL || "redis://127.0.0.1:6379";
    redis = await peerRedis(redisUrl);
    const skippedWhy = `no Redis answers at ${redisUrl}`;
    console.log(redis ? `Redis+Lua peer over ${redisUrl} (${redis.durability})` : `Redis+Lua peer: ${skippedWhy}`);
    // BENCH_ONLY=hot_c256,hot_c256_keys runs those rows alone (ids as in SCENARIOS).
    const only = process.env.BENCH_ONLY?.split(",").filter(Boolean);
    const chosen = SCENARIOS.filter((candidate) => !only || only.includes(candidate.id));
    const skipped = chosen.filter((scenario) => scenario.peer && !redis);
    for (const scenario of chosen.filter((candidate) => !skipped.includes(candidate))) {
      const batch =
        scenario.kind === "live" || scenario.peer ? "" : ` CLAIM_BATCH_MAX=${scenario.batchMax ?? "default"}`;
      console.log(`  running ${scenario.label} @${scenario.connections}${batch}`);
      runs.push(...(await runScenario(scenario, database, seconds, warmup, redis)));
    }
    const problems = [...checkAnswers(runs), ...(await checkLedger(database.url, runs))];
    if (redis) problems.push(...(await checkPeerLedger(redis, database.name, runs)));
    const measured = runs.filter((run) => run.phase === "measure");
    printTable(measured, skipped, skippedWhy);
    if (redis)
      console.log(
        `\nDurability: the service answers 201 once PostgreSQL has committed the claim; the Redis+Lua peer once Redis has it in memory (${redis.durability}: a crash can lose acknowledged claims, up to a second's with appendfsync everysec).`,
      );
    printTargets(measured);
    warnIfBusy(measured);
    console.log(problems.length === 0 ? "\nPASS: no claim lost or invented" : `\nFAIL:\n  ${problems.join("\n  ")}`);
    return problems.length === 0 ? 0 : 1;
  } finally {
    current?.kill();
    if (redis) await dropPeerKeys(redis, database.name).catch(() => {});
    await database.drop();
  }
}

main().then(
  (code) => process.exit(code),
  (error) => {
    if (!interrupted) console.error(`bench: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(interrupted ? 130 : 1);
  },
);
