// `bun bench/profile.ts [soldout|hot|live] [seconds]`: where one request's time goes. Runs the service
// from source under Bun's sampling profiler (--cpu-prof) against a throwaway PostgreSQL database, drives
// one scenario with wrk at 256 connections, and prints the service's CPU per answer and the profile's
// samples by part of the path (framework, hooks, body, validation, claim path, SQL, metrics, answers).
// See docs/benchmarks.md, "Where a request's time goes". Env: BENCH_DATABASE_URL as for `bun run bench`.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type ProfileNode, samplesByPart } from "./profile-parts";
import { createBenchDatabase, postJson, type Service, startFromSource } from "./service";
import { cpuSeconds, parseSeconds, requireWrk, runWrk } from "./wrk";

const CONNECTIONS = 256;

type Kind = "soldout" | "hot" | "live";

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
