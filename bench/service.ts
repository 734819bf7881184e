// The system under test for `bun run bench`: build the binary, give it a throwaway PostgreSQL
// database, start it on a free loopback port, stop it the way an orchestrator would (SIGTERM).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import postgres from "postgres";

const ROOT = join(import.meta.dir, "..");
const BINARY = join(ROOT, "dist", "coupon-service");
const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 20_000;
// Polled this often so the start-to-ready time is precise to a few ms (a refused connection costs ~0.1 ms).
export const READY_POLL_MS = 5;

export interface BenchDatabase {
  /** URL of the fresh database, for the service and the checks. */
  url: string;
  name: string;
  /** PostgreSQL's server_version, for the machine description. */
  serverVersion: string;
  /** Drops the database, forcing out any session still connected; safe to call twice. */
  drop(): Promise<void>;
}

export interface Service {
  pid: number;
  /** e.g. http://127.0.0.1:41234 */
  baseUrl: string;
  /** From just before the spawn to the first 200 of its readiness route, in ms (up to READY_POLL_MS late). */
  readyMs: number;
  /** SIGTERM, then waits for the exit; throws if it does not exit 0 in time. */
  stop(): Promise<void>;
  /** SIGKILL, for cleanup after a failure; resolves once the process is gone. */
  kill(): Promise<void>;
}

/** Runs `bun run build` so the benchmark measures the current code; throws when the build fails. */
export async function build(): Promise<void> {
  const proc = Bun.spawn(["bun", "run", "build"], { cwd: ROOT, stdout: "inherit", stderr: "inherit" });
  const code = await proc.exited;
  if (code !== 0) throw new Error(`bun run build exited with code ${code}`);
}

/** Creates coupon_bench_<random> through the admin (superuser) URL. */
export async function createBenchDatabase(adminUrl: string): Promise<BenchDatabase> {
  const name = `coupon_bench_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  let dropping: Promise<void> | undefined;
  try {
    const [row] = await admin<{ server_version: string }[]>`show server_version`;
    await admin`create database ${admin(name)}`;
    const url = new URL(adminUrl);
    url.pathname = `/${name}`;
    // Every caller awaits the same drop, so an interrupt and the normal exit path cannot race.
    const drop = () => {
      dropping ??= (async () => {
        await admin`drop database if exists ${admin(name)} with (force)`;
        await admin.end();
      })();
      return dropping;
    };
    return { url: url.toString(), name, serverVersion: row?.server_version ?? "unknown", drop };
  } catch (error) {
    await admin.end();
    throw error;
  }
}

/** Asks the kernel for a free TCP port on 127.0.0.1. */
export function freePort(): number {
  const probe = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response() });
  const port = probe.port;
  probe.stop(true);
  if (port === undefined) throw new Error("could not find a free port");
  return port;
}

/** Polls GET `path` (/health/ready) until 200; throws if the process exits first or the deadline passes. */
async function waitReady(baseUrl: string, proc: Bun.Subprocess, path = "/health/ready"): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`service exited with code ${proc.exitCode} before it was ready`);
    const status = await fetch(`${baseUrl}${path}`, { signal: AbortSignal.timeout(1000) })
      .then((response) => response.status)
      .catch(() => 0);
    if (status === 200) return;
    await Bun.sleep(READY_POLL_MS);
  }
  throw new Error(`service not ready after ${READY_TIMEOUT_MS} ms`);
}

/** The process's peak resident set size so far (VmHWM), in bytes; undefined once it is gone. */
export function peakRss(pid: number): number | undefined {
  try {
    const kib = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
    return kib === undefined ? undefined : Number(kib) * 1024;
  } catch {
    return undefined;
  }
}

/**
 * Starts the built binary with only the given settings (LOG_LEVEL=warn, loopback) and waits until ready;
 * `stdout` (default: this process's) takes its log, e.g. a file for runs that log every request.
 */
export async function startService(
  databaseUrl: string,
  settings: Record<string, string>,
  stdout: "inherit" | Bun.BunFile = "inherit",
): Promise<Service> {
  const port = freePort();
  return spawnReady([BINARY], serviceEnv(databaseUrl, port, settings), port, stdout, "/health/ready");
}

/** Starts the service from source, `bun <bunFlags> src/main.ts` (e.g. under the profiler), as startService does the binary. */
export async function startFromSource(databaseUrl: string, bunFlags: string[]): Promise<Service> {
  const port = freePort();
  const command = [process.execPath, ...bunFlags, join(ROOT, "src", "main.ts")];
  return spawnReady(command, serviceEnv(databaseUrl, port, {}), port, "inherit", "/health/ready");
}

/** The service's whole environment: only these settings (LOG_LEVEL=warn, loopback, `port`). */
function serviceEnv(databaseUrl: string, port: number, settings: Record<string, string>): Record<string, string> {
  return {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    DATABASE_URL: databaseUrl,
    HOST: "127.0.0.1",
    PORT: String(port),
    LOG_LEVEL: "warn",
    ...settings,
  };
}

/**
 * Starts the built binary in embedded mode (no DATABASE_URL: PGlite in `dataDir`), from `folder`, with
 * nothing but PATH, HOST, PORT, DATA_DIR and LOG_LEVEL=warn, and waits until ready.
 */
export function startEmbedded(folder: string, dataDir: string): Promise<Service> {
  const port = freePort();
  const env = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOST: "127.0.0.1",
    PORT: String(port),
    DATA_DIR: dataDir,
    LOG_LEVEL: "warn",
  };
  return spawnReady([BINARY], env, port, "inherit", "/health/ready", folder);
}

/** Starts the Redis+Lua benchmark peer (bench/redis-peer.ts) over `redisUrl`, its keys under `prefix`. */
export function startPeer(redisUrl: string, prefix: string): Promise<Service> {
  const port = freePort();
  const env = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    REDIS_URL: redisUrl,
    PORT: String(port),
    PEER_PREFIX: prefix,
  };
  return spawnReady([process.execPath, join(import.meta.dir, "redis-peer.ts")], env, port, "inherit", "/health/live");
}

/** Spawns `command` (in `cwd`) listening on `port` and waits until GET `readyPath` answers 200. */
async function spawnReady(
  command: string[],
  env: Record<string, string>,
  port: number,
  stdout: "inherit" | Bun.BunFile,
  readyPath: string,
  cwd = ROOT,
): Promise<Service> {
  const spawned = performance.now();
  const proc = Bun.spawn(command, { cwd, env, stdout, stderr: "inherit" });
  const baseUrl = `http://127.0.0.1:${port}`;
  const kill = async () => {
    proc.kill("SIGKILL");
    await proc.exited;
  };
  try {
    await waitReady(baseUrl, proc, readyPath);
  } catch (error) {
    await kill();
    throw error;
  }
  const readyMs = performance.now() - spawned;
  return { pid: proc.pid, baseUrl, readyMs, stop: () => stopProcess(proc), kill };
}

/** Sends SIGTERM and waits for exit code 0, killing the process if it overstays STOP_TIMEOUT_MS. */
async function stopProcess(proc: Bun.Subprocess): Promise<void> {
  proc.kill("SIGTERM");
  const timer = setTimeout(() => proc.kill("SIGKILL"), STOP_TIMEOUT_MS);
  const code = await proc.exited;
  clearTimeout(timer);
  if (code !== 0) throw new Error(`service exited with code ${code} (signal ${proc.signalCode ?? "none"}) on SIGTERM`);
}

/** POSTs a JSON body and throws unless the answer has the expected status. */
export async function postJson(
  url: string,
  body: unknown,
  expected: number,
  headers: Record<string, string> = {},
): Promise<void> {
  const response = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  if (response.status !== expected) {
    throw new Error(`POST ${url} answered ${response.status}, expected ${expected}: ${await response.text()}`);
  }
}
