// `bun run bench`: builds the service, then measures claim throughput and latency with wrk against a
// throwaway PostgreSQL database, and checks that no claim was lost or invented. See docs/benchmarks.md.
// Env: BENCH_DURATION (default 10s per measured run), BENCH_WARMUP (default 2s, 0 = none),
// BENCH_DATABASE_URL (admin URL, default postgres://postgres@127.0.0.1:5432/postgres),
// OTEL_EXPORTER_OTLP_PROTOCOL (the tracing rows' encoding, default http/protobuf as the service's),
// BENCH_REDIS_URL (the Redis of the Redis+Lua peer's rows, default redis://127.0.0.1:6379; without one
// answering, those rows are printed as skipped), BENCH_ONLY (row ids as in bench/scenarios.ts, and
// start_ready for the timed starts, embedded for embedded mode). Writes docs/benchmarks/claims-by-connections.svg when its six rows ran.
import { RedisClient } from "bun";
import { type EmbeddedResult, measureEmbedded } from "./embedded";
import { type BenchIssuer, startBenchIssuer } from "./jwt";
import { checkAnswers, checkLedger, checkPeerLedger } from "./ledger";
import {
  embeddedLedgerHolds,
  printEmbedded,
  printEmbeddedRow,
  printStarts,
  printTable,
  printTargets,
  type Starts,
  warnIfBusy,
  writeConnectionsChart,
} from "./report";
import { HOT_STOCK, type Run, SCENARIOS, type Scenario } from "./scenarios";
import {
  type BenchDatabase,
  build,
  createBenchDatabase,
  peakRss,
  postJson,
  type Service,
  startPeer,
  startService,
} from "./service";
import { describeMachine, killWrk, openFilesLimit, parseSeconds, requireWrk, runWrk, WRK_THREADS } from "./wrk";

/** The Redis behind the peer's rows: its URL, and its server's pid for its CPU share. */
interface PeerRedis {
  url: string;
  pid: number;
  /** How it keeps acknowledged writes (CONFIG appendonly / appendfsync), for the table's note. */
  durability: string;
}

/** BENCH_ONLY's ids for the start-to-ready measurement and embedded mode, which are not rows of SCENARIOS. */
const START_READY = "start_ready";
const EMBEDDED = "embedded";
/** Starts timed for the start-to-ready figure, after the one that migrates the empty database. */
const READY_STARTS = 10;

/** Tokens minted per wrk thread and second of a measured run, for the JWT row: above any rate seen here. */
const TOKENS_PER_THREAD_SECOND = 15_000;
/** The JWT row's ADMIN_TOKEN, with which it creates its coupons (its claims carry JWTs). */
const BENCH_ADMIN_TOKEN = "bench-admin-token-0123456789";

/** Open files a run needs beyond one per connection: the service's pool, listener, pipes and runtime. */
const FILES_MARGIN = 64;

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

/**
 * Creates the run's coupons through the API (each sold out by one claim for the flood): `<id>_<phase>`,
 * or `<id>_<phase>_0..N-1` for N coupons as claim.lua names them; returns wrk's arguments for them too.
 */
async function prepareCoupons(service: Service, scenario: Scenario, phase: string, issuer?: BenchIssuer) {
  if (scenario.kind === "live") return { coupons: [], seeded: 0, args: [] };
  const prefix = `${scenario.id}_${phase}`;
  const count = scenario.coupons;
  const coupons = count === undefined ? [prefix] : Array.from({ length: count }, (_, k) => `${prefix}_${k}`);
  const args = [
    prefix,
    ...(scenario.keys ? ["keys"] : []),
    ...(count === undefined ? [] : [String(count)]),
    ...(issuer ? [issuer.tokensArg] : []),
  ];
  const amount = scenario.kind === "hot" ? HOT_STOCK : 1;
  const admin: Record<string, string> = issuer ? { authorization: `Bearer ${BENCH_ADMIN_TOKEN}` } : {};
  await Promise.all(coupons.map((name) => postJson(`${service.baseUrl}/api/coupons`, { name, amount }, 201, admin)));
  if (scenario.kind === "hot") return { coupons, seeded: 0, args };
  const seed = (coupon_name: string) =>
    postJson(`${service.baseUrl}/api/coupons/claim`, { user_id: "seed", coupon_name }, 201);
  await Promise.all(coupons.map(seed));
  return { coupons, seeded: coupons.length, args };
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
  // Bearer JWTs: an issuer in this process, and a token for every user claim.lua names (both phases
  // name the same users, on coupons of their own).
  const issuer = scenario.jwt
    ? await startBenchIssuer(Math.ceil(seconds * TOKENS_PER_THREAD_SECOND), WRK_THREADS, console.log)
    : undefined;
  if (issuer) Object.assign(settings, issuer.settings, { ADMIN_TOKEN: BENCH_ADMIN_TOKEN });
  const service = scenario.peer
    ? await startPeer((redis as PeerRedis).url, databaseName)
    : await startService(databaseUrl, settings);
  current = service;
  const runs: Run[] = [];
  try {
    const phases = warmup > 0 ? (["warmup", "measure"] as const) : (["measure"] as const);
    for (const phase of phases) {
      const { coupons, seeded, args } = await prepareCoupons(service, scenario, phase, issuer);
      const path = scenario.kind === "live" ? "/health/live" : "/api/coupons/claim";
      const { result, cpu } = await runWrk({
        url: `${service.baseUrl}${path}`,
        connections: scenario.connections,
        seconds: phase === "warmup" ? warmup : seconds,
        args,
        servicePid: service.pid,
        databaseName,
        storePid: scenario.peer ? redis?.pid : undefined,
      });
      runs.push({ scenario, phase, coupons, seeded, result, cpu, peakRss: peakRss(service.pid) });
    }
  } catch (error) {
    service.kill();
    current = undefined;
    throw error;
  } finally {
    issuer?.stop();
  }
  await service.stop();
  current = undefined;
  return runs;
}

/**
 * Starts the service READY_STARTS + 1 times on the run's database, idle, each stopped with SIGTERM before
 * the next: exec to ready (bench/service.ts), the first start apart as it migrates the empty database.
 */
async function timeStarts(database: BenchDatabase): Promise<Starts> {
  const times: number[] = [];
  for (let start = 0; start <= READY_STARTS; start++) {
    const service = await startService(database.url, {});
    current = service;
    times.push(service.readyMs);
    await service.stop(); // at once: a SIGTERM just after ready must exit 0 too (stop() checks)
    current = undefined;
  }
  const [migrating = Number.NaN, ...ready] = times;
  return { migrating, ready };
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

/**
 * Why the scenario cannot run with this process's open-files limit (a connection costs one file in wrk
 * and one in the service; short of them, wrk and the service would fail connections), or undefined.
 */
function tooFewFiles(scenario: Scenario): string | undefined {
  const limit = openFilesLimit();
  const needed = scenario.connections + FILES_MARGIN;
  if (needed <= limit) return undefined;
  return `open files limit ${limit} < ${needed}; \`ulimit -n ${needed}\` first`;
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
    const noRedis = `no Redis answers at ${redisUrl}`;
    console.log(redis ? `Redis+Lua peer over ${redisUrl} (${redis.durability})` : `Redis+Lua peer: ${noRedis}`);
    // BENCH_ONLY=hot_c256,hot_c256_keys runs those rows alone (ids as in SCENARIOS, bench/scenarios.ts).
    const only = process.env.BENCH_ONLY?.split(",").filter(Boolean);
    const chosen = SCENARIOS.filter((candidate) => !only || only.includes(candidate.id));
    const skipped = chosen.flatMap((scenario) => {
      const why = scenario.peer && !redis ? noRedis : tooFewFiles(scenario);
      return why ? [{ scenario, why }] : [];
    });
    for (const { scenario, why } of skipped) console.log(`  skipping ${scenario.id}: ${why}`);
    // Before the scenarios, so the first of these starts is the one that migrates the empty database.
    let starts: Starts | undefined;
    if (!only || only.includes(START_READY)) {
      console.log(`  timing ${READY_STARTS + 1} starts of the service, idle`);
      starts = await timeStarts(database);
    }
    for (const scenario of chosen.filter((candidate) => !skipped.some((skip) => skip.scenario === candidate))) {
      const batch =
        scenario.kind === "live" || scenario.peer ? "" : ` CLAIM_BATCH_MAX=${scenario.batchMax ?? "default"}`;
      console.log(`  running ${scenario.label} @${scenario.connections}${batch}`);
      runs.push(...(await runScenario(scenario, database, seconds, warmup, redis)));
    }
    // Last: the binary with no database at all, in a folder of its own (bench/embedded.ts).
    let embedded: EmbeddedResult | undefined;
    if (!only || only.includes(EMBEDDED)) {
      console.log("  running embedded mode (no DATABASE_URL): starts, idle memory, hot coupon @256");
      embedded = await measureEmbedded({ seconds, warmup });
    }
    // BENCH_ONLY=embedded alone starts no service on the database: nothing migrated it, nothing to check.
    const ledger = runs.length > 0 || starts ? await checkLedger(database.url, runs) : [];
    const problems = [...checkAnswers(runs), ...ledger];
    if (embedded && !embeddedLedgerHolds(embedded)) problems.push("embedded mode: its ledger does not hold");
    if (redis) problems.push(...(await checkPeerLedger(redis.url, database.name, runs)));
    const measured = runs.filter((run) => run.phase === "measure");
    printTable(measured, skipped);
    if (embedded) printEmbeddedRow(embedded);
    if (starts) printStarts(starts);
    if (embedded) printEmbedded(embedded);
    if (redis)
      console.log(
        `\nDurability: the service answers 201 once PostgreSQL has committed the claim; the Redis+Lua peer once Redis has it in memory (${redis.durability}: a crash can lose acknowledged claims, up to a second's with appendfsync everysec).`,
      );
    printTargets(measured, sink, starts, embedded);
    warnIfBusy(measured);
    const day = new Date().toISOString().slice(0, 10);
    writeConnectionsChart(
      measured,
      `bun run bench, ${day}: wrk -t2, ${seconds} s per row after ${warmup} s of warm-up`,
    );
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
