// Embedded mode as a newcomer meets it: the built dist/coupon-service with no DATABASE_URL, started in
// an empty folder (PGlite in DATA_DIR). Measures exec -> GET /health/ready 200 of the first start and
// of a restart on the folder it left, the resident set idle and under a 256-connection hot coupon, and
// checks the ledger through the API (PGlite is inside the service: no SQL from outside). Builds nothing.
// Alone: `bun bench/embedded.ts` (BENCH_DURATION, BENCH_WARMUP as for `bun run bench`).
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Service, startEmbedded } from "./service";
import { type CpuShare, parseSeconds, requireWrk, runWrk, type WrkResult } from "./wrk";

const BINARY = join(import.meta.dir, "..", "dist", "coupon-service");
const COUPON = "embedded-hot";
/** The warm-up's own coupon: claim.lua numbers its users from 1 in every run. */
const WARMUP_COUPON = "embedded-warmup";
const STOCK = 100_000_000;
const CONNECTIONS = 256;
/** How long the claims still inside the service may take to be decided after a run. */
const SETTLE_TIMEOUT_MS = 20_000;
/** After ready, before the idle resident set is read. */
const SETTLE_MS = 2000;
const RSS_SAMPLE_MS = 100;

export interface EmbeddedResult {
  /** exec -> /health/ready 200 in an empty folder, and again on the folder that start left. */
  firstStartMs: number;
  restartMs: number;
  /** VmRSS SETTLE_MS after the first start was ready. */
  idleRssMb: number;
  /** The measured wrk run on the hot coupon (256 connections, a new user per claim). */
  claimsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  /** Answers other than 201, and socket errors. */
  errors: number;
  /** VmRSS sampled during the measured run, and right after it. */
  peakRssMb: number;
  endRssMb: number;
  /** CPU shares over the measured run; `postgres` is the machine's own server, which embedded mode does not use. */
  cpu: CpuShare;
  wrk: WrkResult;
  ledger: Ledger;
}

/** The coupon as the service reports it after the runs, against what wrk was answered. */
export interface Ledger {
  amount: number;
  remaining: number;
  claims: number;
  /** 201s of the measured run, and requests it sent but never saw answered (each may have committed). */
  created: number;
  unanswered: number;
  /** remaining + claims = amount, and created <= claims <= created + unanswered. */
  holds: boolean;
  /** The claims a restart found: the same as before it. */
  afterRestart: number;
}

/** VmRSS of `pid` in MB (0 once it is gone). */
function rssMb(pid: number): number {
  try {
    const kb = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
    return Math.round(Number(kb ?? 0) / 1024);
  } catch {
    return 0;
  }
}

async function call(method: string, url: string, body?: unknown): Promise<{ status: number; json: any }> {
  const response = await fetch(url, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(30_000),
  });
  return { status: response.status, json: await response.json() };
}

/** The coupon's stock and holders as GET /api/coupons/{name} reports them. */
async function couponState(baseUrl: string): Promise<{ amount: number; remaining: number; claims: number }> {
  const { status, json } = await call("GET", `${baseUrl}/api/coupons/${COUPON}`);
  if (status !== 200) throw new Error(`GET /api/coupons/${COUPON} answered ${status}`);
  return { amount: json.amount, remaining: json.remaining_amount, claims: json.claimed_by.length };
}

/** Waits until no claim is waiting or in flight in the service (wrk stops with requests still inside it). */
async function settled(baseUrl: string): Promise<void> {
  let quiet = 0;
  for (const started = performance.now(); performance.now() - started < SETTLE_TIMEOUT_MS; await Bun.sleep(100)) {
    const metrics = await fetch(`${baseUrl}/metrics`).then((response) => response.text());
    const pending = Number(/^coupon_claims_pending (\d+)/m.exec(metrics)?.[1] ?? Number.NaN);
    quiet = pending === 0 ? quiet + 1 : 0;
    if (quiet === 3) return;
  }
  throw new Error(`claims still pending ${SETTLE_TIMEOUT_MS} ms after the run`);
}

const created = (result: WrkResult) => result.statuses["201"] ?? 0;
const answered = (result: WrkResult) => Object.values(result.statuses).reduce((sum, count) => sum + count, 0);

/** Runs wrk on `coupon` for `seconds`, sampling the service's resident set meanwhile. */
async function hotCoupon(running: Service, coupon: string, seconds: number) {
  let peak = rssMb(running.pid);
  const sampler = setInterval(() => {
    peak = Math.max(peak, rssMb(running.pid));
  }, RSS_SAMPLE_MS);
  try {
    const run = await runWrk({
      url: `${running.baseUrl}/api/coupons/claim`,
      connections: CONNECTIONS,
      seconds,
      args: [coupon],
      servicePid: running.pid,
      databaseName: "(embedded: PGlite in the service)", // matches no PostgreSQL backend
    });
    const end = rssMb(running.pid);
    return { ...run, peakRssMb: Math.max(peak, end), endRssMb: end };
  } finally {
    clearInterval(sampler);
  }
}

/** Measures embedded mode with the built binary (`bun run build` first) in a fresh temporary folder. */
export async function measureEmbedded(options: { seconds: number; warmup: number }): Promise<EmbeddedResult> {
  if (!existsSync(BINARY)) throw new Error(`${BINARY} is missing: run \`bun run build\` first`);
  const folder = mkdtempSync(join(tmpdir(), "coupon-embedded-"));
  const dataDir = join(folder, "data");
  let running: Service | undefined;
  try {
    running = await startEmbedded(folder, dataDir);
    const firstStartMs = Math.round(running.readyMs);
    await Bun.sleep(SETTLE_MS);
    const idleRssMb = rssMb(running.pid);
    for (const name of [WARMUP_COUPON, COUPON]) {
      const create = await call("POST", `${running.baseUrl}/api/coupons`, { name, amount: STOCK });
      if (create.status !== 201) throw new Error(`creating coupon ${name} answered ${create.status}`);
    }
    if (options.warmup > 0) await hotCoupon(running, WARMUP_COUPON, options.warmup);
    const measured = await hotCoupon(running, COUPON, options.seconds);
    await settled(running.baseUrl);
    const state = await couponState(running.baseUrl);
    await running.stop();
    running = await startEmbedded(folder, dataDir);
    const restartMs = Math.round(running.readyMs);
    const afterRestart = (await couponState(running.baseUrl)).claims;
    await running.stop();
    running = undefined;

    const { result } = measured;
    const ledger: Ledger = {
      ...state,
      created: created(result),
      unanswered: result.unanswered,
      holds:
        state.remaining + state.claims === state.amount &&
        state.claims >= created(result) &&
        state.claims <= created(result) + result.unanswered,
      afterRestart,
    };
    const { connect, read, write, timeout } = result.socket_errors;
    return {
      firstStartMs,
      restartMs,
      idleRssMb,
      claimsPerSecond: Math.round(created(result) / (result.duration_us / 1e6)),
      p50Ms: result.p50_us / 1000,
      p99Ms: result.p99_us / 1000,
      errors: answered(result) - created(result) + connect + read + write + timeout,
      peakRssMb: measured.peakRssMb,
      endRssMb: measured.endRssMb,
      cpu: measured.cpu,
      wrk: result,
      ledger,
    };
  } finally {
    await running?.kill();
    rmSync(folder, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  requireWrk();
  const seconds = parseSeconds(process.env.BENCH_DURATION ?? "8s", "BENCH_DURATION");
  const warmup = parseSeconds(process.env.BENCH_WARMUP ?? "2s", "BENCH_WARMUP");
  const r = await measureEmbedded({ seconds, warmup });
  const { ledger } = r;
  console.log(`embedded mode (dist/coupon-service, no DATABASE_URL, a fresh DATA_DIR):`);
  console.log(`  first start ${r.firstStartMs} ms to ready, restart ${r.restartMs} ms, idle RSS ${r.idleRssMb} MB`);
  console.log(
    `  hot coupon, ${CONNECTIONS} connections, ${seconds} s: ${r.claimsPerSecond} claims/s, p50 ${r.p50Ms} ms, ` +
      `p99 ${r.p99Ms} ms, ${r.errors} errors, RSS peak ${r.peakRssMb} MB, end ${r.endRssMb} MB`,
  );
  console.log(`  CPU (% of one core): service ${r.cpu.service}, wrk ${r.cpu.wrk}, other ${r.cpu.other}`);
  console.log(
    `  ledger: ${ledger.remaining} remaining + ${ledger.claims} claims = ${ledger.remaining + ledger.claims} ` +
      `(amount ${ledger.amount}); ${ledger.created} answered 201, ${ledger.unanswered} unanswered; ` +
      `after the restart ${ledger.afterRestart} claims: ${ledger.holds && ledger.afterRestart === ledger.claims ? "OK" : "VIOLATED"}`,
  );
  if (!ledger.holds || ledger.afterRestart !== ledger.claims) process.exit(1);
}
