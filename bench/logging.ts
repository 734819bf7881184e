// `bun bench/logging.ts`: what the per-request log line costs on the sold-out flood (wrk, 256
// connections), LOG_LEVEL=info with LOG_REQUESTS=all, errors and none, the log written to a file as a
// container runtime's log driver would take it. Prints req/s, p99 and log lines per mode.
// Env: BENCH_DURATION (default 10s), BENCH_ROUNDS (default 2, modes interleaved), BENCH_DATABASE_URL.
import { rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { build, createBenchDatabase, postJson, type Service, startService } from "./service";
import { describeMachine, parseSeconds, requireWrk, runWrk } from "./wrk";

const MODES = ["all", "errors", "none"] as const;
const CONNECTIONS = 256;

/** One measured flood: answers per second with 409 SOLD_OUT, p99 and the bytes logged. */
async function flood(databaseUrl: string, databaseName: string, mode: string, round: number, seconds: number) {
  const logFile = join(tmpdir(), `coupon-bench-log-${process.pid}-${mode}-${round}.jsonl`);
  const service: Service = await startService(
    databaseUrl,
    { LOG_LEVEL: "info", LOG_REQUESTS: mode },
    Bun.file(logFile),
  );
  try {
    const coupon = `log_${mode}_${round}`;
    await postJson(`${service.baseUrl}/api/coupons`, { name: coupon, amount: 1 }, 201);
    await postJson(`${service.baseUrl}/api/coupons/claim`, { user_id: "seed", coupon_name: coupon }, 201);
    const run = (s: number) =>
      runWrk({
        url: `${service.baseUrl}/api/coupons/claim`,
        connections: CONNECTIONS,
        seconds: s,
        args: [coupon],
        servicePid: service.pid,
        databaseName,
      });
    await run(2); // warm-up: JIT, connections
    const before = statSync(logFile).size;
    const { result, cpu } = await run(seconds);
    const logged = statSync(logFile).size - before;
    const soldOut = result.statuses["409 SOLD_OUT"] ?? 0;
    return {
      reqPerSecond: soldOut / (result.duration_us / 1e6),
      p99ms: result.p99_us / 1000,
      logMiBPerSecond: logged / 1024 ** 2 / seconds,
      other: result.requests - soldOut,
      cpu,
    };
  } finally {
    await service.stop();
    rmSync(logFile, { force: true });
  }
}

async function main(): Promise<void> {
  requireWrk();
  const seconds = parseSeconds(process.env.BENCH_DURATION || "10s", "BENCH_DURATION");
  const rounds = Number(process.env.BENCH_ROUNDS || 2);
  const database = await createBenchDatabase(
    process.env.BENCH_DATABASE_URL || "postgres://postgres@127.0.0.1:5432/postgres",
  );
  try {
    console.log(describeMachine(database.serverVersion).join("\n"));
    await build();
    console.log(`\nsold-out flood @${CONNECTIONS}, LOG_LEVEL=info, ${seconds}s per run, ${rounds} rounds\n`);
    console.log("| LOG_REQUESTS | round | req/s | p99 ms | log MiB/s | other answers | CPU % bun / pg / wrk / other |");
    console.log("| --- | --- | --- | --- | --- | --- | --- |");
    for (let round = 1; round <= rounds; round++) {
      for (const mode of MODES) {
        const r = await flood(database.url, database.name, mode, round, seconds);
        const cpu = `${r.cpu.service} / ${r.cpu.postgres} / ${r.cpu.wrk} / ${r.cpu.other}`;
        console.log(
          `| ${mode} | ${round} | ${Math.round(r.reqPerSecond).toLocaleString("en-US")} | ${r.p99ms.toFixed(1)} | ${r.logMiBPerSecond.toFixed(1)} | ${r.other} | ${cpu} |`,
        );
      }
    }
  } finally {
    await database.drop();
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(`bench/logging: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  },
);
