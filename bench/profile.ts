// `bun bench/profile.ts [soldout|hot|live] [seconds]`: where one request's time goes. Runs the service
// from source under Bun's sampling profiler (--cpu-prof) against a throwaway PostgreSQL database, drives
// one scenario with wrk at 256 connections, and prints the service's CPU per answer and the profile's
// samples by part of the path (framework, hooks, body, validation, claim path, SQL, metrics, answers).
// See docs/benchmarks.md, "Where a request's time goes". Env: BENCH_DATABASE_URL as for `bun run bench`.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createBenchDatabase, postJson, type Service, startFromSource } from "./service";
import { cpuSeconds, parseSeconds, requireWrk, runWrk } from "./wrk";

const CONNECTIONS = 256;

type Kind = "soldout" | "hot" | "live";

/** A sampled frame as the .cpuprofile (Chrome format) gives it. */
interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string };
  hitCount?: number;
}

/** Parts of the path, first match wins: by file for JavaScript frames, by name for native ones. */
const PARTS: [part: string, test: (name: string, url: string) => boolean][] = [
  // Elysia compiles each route's handler ("handle") and response mapping ("map") at run time: no file.
  [
    "framework (Elysia: routing, context, lifecycle, response mapping)",
    (name, url) => url.includes("/elysia/") || (url === "" && (name === "handle" || name === "map")),
  ],
  // TypeBox's compiled checks ("check") and the schemas' patterns, which the profile names by their source.
  ["validation (TypeBox)", (name, url) => url.includes("/typebox/") || name === "check" || name.startsWith("/")],
  [
    "header reads (Headers.get: request id, content type, Idempotency-Key)",
    (name, url) => url === "" && name === "get",
  ],
  [
    "request hooks (request id, path, request log decision, trace)",
    (name, url) => url.endsWith("/src/app.ts") || url.endsWith("/src/http/request.ts") || name === "randomUUID",
  ],
  [
    "body (read, UTF-8, JSON.parse, depth)",
    (name, url) => url.endsWith("/src/http/body.ts") || ["bytes", "decode", "parse"].includes(name),
  ],
  [
    "metrics (request durations and outcomes; prom-client only at a scrape)",
    (_, url) => url.includes("/prom-client/") || url.includes("/src/metrics/"),
  ],
  [
    "claim path (claimer, group commit, memory answers)",
    (_, url) => url.includes("/src/engine/") || url.includes("/src/domain/"),
  ],
  [
    "SQL (Drizzle, postgres.js, statements, results)",
    (_, url) => url.includes("/postgres/") || url.includes("/drizzle-orm/") || url.includes("/src/store/"),
  ],
  [
    "route and answer (handler, problem or 201 body, Response, JSON.stringify)",
    (name, url) => url.includes("/src/http/") || ["Response", "Headers", "stringify", "writeBuffered"].includes(name),
  ],
  ["logs", (_, url) => url.endsWith("/src/log.ts")],
  [
    "promises and timers (await, setImmediate, setTimeout)",
    (name) => ["setImmediate", "setTimeout", "clearTimeout", "then", "asyncFunctionDrive", "resolve"].includes(name),
  ],
  ["other JavaScript", (name, url) => url !== "" || (name !== "" && name !== "anonymous" && name !== "(root)")],
  ["native, unattributed (HTTP server: accept, parse, write; event loop)", () => true],
];

/** Samples per part of the path, from a .cpuprofile's nodes (self samples only). */
export function samplesByPart(nodes: ProfileNode[]): Map<string, number> {
  const totals = new Map<string, number>(PARTS.map(([part]) => [part, 0]));
  for (const node of nodes) {
    const hits = node.hitCount ?? 0;
    if (hits === 0) continue;
    const { functionName, url } = node.callFrame;
    const part = PARTS.find(([, test]) => test(functionName, url))?.[0] as string;
    totals.set(part, (totals.get(part) ?? 0) + hits);
  }
  return totals;
}

async function main(): Promise<void> {
  requireWrk();
  const kind = (process.argv[2] ?? "soldout") as Kind;
  if (!["soldout", "hot", "live"].includes(kind)) throw new Error(`unknown scenario ${kind}: soldout, hot or live`);
  const seconds = parseSeconds(process.argv[3] ?? "10", "seconds");
  const database = await createBenchDatabase(
    process.env.BENCH_DATABASE_URL || "postgres://postgres@127.0.0.1:5432/postgres",
  );
  const profileDir = mkdtempSync(join(tmpdir(), "coupon-profile-"));
  let service: Service | undefined;
  try {
    service = await startFromSource(database.url, ["--cpu-prof", `--cpu-prof-dir=${profileDir}`]);
    const { baseUrl } = service;
    if (kind !== "live") {
      await postJson(`${baseUrl}/api/coupons`, { name: "profiled", amount: kind === "hot" ? 100_000_000 : 1 }, 201);
      if (kind === "soldout")
        await postJson(`${baseUrl}/api/coupons/claim`, { user_id: "seed", coupon_name: "profiled" }, 201);
    }
    // A first pass warms the JIT; the second is the one measured (the profile covers both).
    const path = kind === "live" ? "/health/live" : "/api/coupons/claim";
    const args = kind === "live" ? [] : ["profiled"];
    const wrk = { url: `${baseUrl}${path}`, connections: CONNECTIONS, args, servicePid: service.pid };
    await runWrk({ ...wrk, seconds: 2, databaseName: database.name });
    const before = cpuSeconds(service.pid);
    const { result } = await runWrk({ ...wrk, seconds, databaseName: database.name });
    const used = cpuSeconds(service.pid) - before;
    await service.stop(); // the profile is written on the way out
    const file = readdirSync(profileDir).find((name) => name.endsWith(".cpuprofile"));
    if (!file) throw new Error("the service wrote no profile");
    const profile = JSON.parse(readFileSync(join(profileDir, file), "utf8")) as { nodes: ProfileNode[] };
    const parts = samplesByPart(profile.nodes);
    const total = [...parts.values()].reduce((sum, count) => sum + count, 0);
    console.log(
      `\n${kind} @${CONNECTIONS}, profiled (slower than unprofiled): ${result.requests} answers in ${seconds}s, ` +
        `service CPU ${((used * 1e6) / Math.max(1, result.requests)).toFixed(1)} µs per answer\n`,
    );
    console.log("| part of the path | share of samples |\n| --- | --- |");
    for (const [part, count] of [...parts].sort((a, b) => b[1] - a[1]))
      if (count > 0) console.log(`| ${part} | ${((100 * count) / total).toFixed(1)}% |`);
    console.log(`\n${total} samples (self time; the profile: ${join(profileDir, file)})`);
  } finally {
    service?.kill();
    await database.drop();
    if (process.env.KEEP_PROFILE !== "1") rmSync(profileDir, { recursive: true, force: true });
  }
}

if (import.meta.main)
  main().catch((error) => {
    console.error(`profile: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  });
