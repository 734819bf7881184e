// The load-generator side of `bun run bench`: run wrk with bench/claim.lua, parse its result line,
// measure who used the CPU during the run, and describe the machine the figures come from.
import { readdirSync, readFileSync } from "node:fs";
import { availableParallelism, totalmem } from "node:os";
import { join } from "node:path";

const SCRIPT = join(import.meta.dir, "claim.lua");
const RESULT_PREFIX = "BENCH_RESULT ";
/** A response slower than this counts as a wrk timeout error. */
const WRK_TIMEOUT = "5s";
/** Slack on top of the run's duration before a hung wrk is killed. */
const WRK_OVERRUN_MS = 30_000;

/** What claim.lua's done() prints (times in µs). */
export interface WrkResult {
  requests: number;
  duration_us: number;
  p50_us: number;
  p99_us: number;
  max_us: number;
  socket_errors: { connect: number; read: number; write: number; timeout: number };
  /** Requests written, and those among them never answered (in flight when wrk stopped, or lost). */
  sent: number;
  unanswered: number;
  /** Answers per status; 4xx/5xx keyed with the problem code, e.g. "409 SOLD_OUT". */
  statuses: Record<string, number>;
}

/** CPU used during the run, in % of one core (the machine has nproc × 100 %). */
export interface CpuShare {
  service: number;
  /** The store: this database's backends plus PostgreSQL's own background processes (or `storePid`'s). */
  postgres: number;
  wrk: number;
  /** Everything else on the machine (other databases' backends, other programs, the kernel's own threads). */
  other: number;
}

/** Cumulative CPU ticks at one instant. */
interface CpuSnapshot {
  service: number;
  postgres: Map<number, number>;
  machine: number;
}

export interface WrkOptions {
  url: string;
  connections: number;
  seconds: number;
  /** Extra script arguments: the coupon name for claims, none for a GET. */
  args: string[];
  /** The service's pid, for its CPU share. */
  servicePid: number;
  /** The benchmark database, to tell its PostgreSQL backends from other sessions'. */
  databaseName: string;
  /** The store's process when it is not PostgreSQL (the Redis server behind the peer): its CPU share instead. */
  storePid?: number;
}

/** The wrk process under way, so an interrupted benchmark can end it. */
let running: Bun.Subprocess | undefined;

/** Kills the wrk run under way, if any (for cleanup on an interrupt). */
export function killWrk(): void {
  running?.kill("SIGKILL");
}

/** Exits 1 with an install hint when wrk is not on PATH. */
export function requireWrk(): void {
  if (Bun.which("wrk")) return;
  console.error("bench: wrk is not installed. Install it with `apt-get install -y wrk` and run again.");
  process.exit(1);
}

/**
 * Open files a process started by this one may have: the soft limit, which Bun raised to the hard one at
 * start (wrk and the service inherit it). Each connection costs one in wrk and one in the service.
 */
export function openFilesLimit(): number {
  const line = readProc("/proc/self/limits")
    .split("\n")
    .find((text) => text.startsWith("Max open files"));
  const soft = line?.split(/\s{2,}/)[1];
  return soft === undefined || soft === "unlimited" ? Number.POSITIVE_INFINITY : Number(soft);
}

/** Parses a duration like "10s", "1m" or "10" (seconds) into whole seconds; throws on anything else. */
export function parseSeconds(text: string, name: string): number {
  const match = /^(\d+)([sm]?)$/.exec(text.trim());
  if (!match) throw new Error(`${name}=${JSON.stringify(text)}: expected e.g. 10s, 1m or 10`);
  return Number(match[1]) * (match[2] === "m" ? 60 : 1);
}

/** wrk's threads: claim.lua numbers its users per thread (bench/jwt.ts mints a file of tokens for each). */
export const WRK_THREADS = 2;

/** Runs wrk -t2 for `seconds` and returns its result line and the CPU shares over the run. */
export async function runWrk(options: WrkOptions): Promise<{ result: WrkResult; cpu: CpuShare }> {
  const { url, connections, seconds, args, servicePid, databaseName, storePid } = options;
  const command = [
    "wrk",
    `-t${WRK_THREADS}`,
    `-c${connections}`,
    `-d${seconds}s`,
    "--timeout",
    WRK_TIMEOUT,
    "-s",
    SCRIPT,
    url,
  ];
  const before = cpuSnapshot(servicePid, databaseName, storePid);
  const started = performance.now();
  const proc = Bun.spawn([...command, ...args], { stdout: "pipe", stderr: "pipe" });
  running = proc;
  const watchdog = setTimeout(() => proc.kill("SIGKILL"), seconds * 1000 + WRK_OVERRUN_MS);
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  clearTimeout(watchdog);
  running = undefined;
  const after = cpuSnapshot(servicePid, databaseName, storePid);
  const wallSeconds = (performance.now() - started) / 1000;
  const line = stdout.split("\n").find((text) => text.startsWith(RESULT_PREFIX));
  if (code !== 0 || !line) throw new Error(`wrk failed (exit ${code}):\n${stdout}\n${stderr}`);
  const wrkSeconds = Number(proc.resourceUsage()?.cpuTime.total ?? 0) / 1e6;
  const cpu = cpuShare(before, after, wrkSeconds, wallSeconds);
  return { result: JSON.parse(line.slice(RESULT_PREFIX.length)) as WrkResult, cpu };
}

/** Reads the service's, its store's (PostgreSQL's, or `storePid`'s) and the whole machine's CPU ticks so far. */
function cpuSnapshot(servicePid: number, databaseName: string, storePid?: number): CpuSnapshot {
  const store = storePid === undefined ? postgresTicks(databaseName) : new Map([[storePid, processTicks(storePid)]]);
  return { service: processTicks(servicePid), postgres: store, machine: machineBusyTicks() };
}

/** Turns two snapshots and wrk's own CPU seconds into % of one core over the wall time. */
function cpuShare(before: CpuSnapshot, after: CpuSnapshot, wrkSeconds: number, wallSeconds: number): CpuShare {
  const percent = (seconds: number) => Math.round((seconds / wallSeconds) * 100);
  const service = (after.service - before.service) / clockTicks();
  const postgres = sumNewTicks(before.postgres, after.postgres) / clockTicks();
  const machine = (after.machine - before.machine) / clockTicks();
  return {
    service: percent(service),
    postgres: percent(postgres),
    wrk: percent(wrkSeconds),
    other: percent(Math.max(0, machine - service - postgres - wrkSeconds)),
  };
}

let ticksPerSecond: number | undefined;

/** The kernel's clock ticks per second (getconf CLK_TCK), in which /proc reports CPU time. */
function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    const out = Bun.spawnSync(["getconf", "CLK_TCK"]).stdout.toString().trim();
    ticksPerSecond = Number(out) > 0 ? Number(out) : 100;
  }
  return ticksPerSecond;
}

/** User + system CPU seconds of one process so far (0 when it is gone). */
export function cpuSeconds(pid: number): number {
  return processTicks(pid) / clockTicks();
}

/** User + system CPU ticks of one process so far (0 when it is gone). */
function processTicks(pid: number): number {
  const stat = readProc(`/proc/${pid}/stat`);
  if (!stat) return 0;
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15 of stat)
}

/** The text of a small /proc file, or "" when the process is gone. */
function readProc(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

/** CPU ticks by pid of PostgreSQL's processes, except backends serving another database than ours. */
function postgresTicks(databaseName: string): Map<number, number> {
  const ticks = new Map<number, number>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || readProc(`/proc/${entry}/comm`).trim() !== "postgres") continue;
    // A client backend's title reads "postgres: 15/main: USER DB 127.0.0.1(PORT) STATE" (or "[local]").
    const title = readProc(`/proc/${entry}/cmdline`).replaceAll("\0", " ");
    const otherClient = /\(\d+\)|\[local\]/.test(title) && !title.includes(` ${databaseName} `);
    if (!otherClient) ticks.set(Number(entry), processTicks(Number(entry)));
  }
  return ticks;
}

/** Ticks all CPUs spent in processes so far (user, nice, system from /proc/stat; not irq/softirq, which
 * on loopback is mostly the benchmark's own traffic, nor steal). */
function machineBusyTicks(): number {
  const fields = readProc("/proc/stat").split("\n")[0]?.trim().split(/\s+/).slice(1).map(Number) ?? [];
  const [user = 0, nice = 0, system = 0] = fields;
  return user + nice + system;
}

/** Ticks used between two snapshots; a process born in between counts in full. */
function sumNewTicks(before: Map<number, number>, after: Map<number, number>): number {
  let total = 0;
  for (const [pid, ticks] of after) total += ticks - (before.get(pid) ?? 0);
  return total;
}

/** One line per fact about the machine: cores, CPU, memory, PostgreSQL, Bun and wrk versions. */
export function describeMachine(postgresVersion: string): string[] {
  const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? "unknown";
  const wrkVersion = Bun.spawnSync(["wrk", "-v"]).stdout.toString().split("\n")[0]?.split(" Copyright")[0];
  return [
    `nproc: ${availableParallelism()}`,
    `CPU: ${model}`,
    `memory: ${(totalmem() / 1024 ** 3).toFixed(1)} GiB`,
    `open files: ${openFilesLimit()} per process`,
    `PostgreSQL: ${postgresVersion}`,
    `Bun: ${Bun.version}`,
    `wrk: ${wrkVersion?.trim() || "unknown"}`,
  ];
}
