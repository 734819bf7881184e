// `bun run bench:overload`: the herd. 2,500 wrk connections retrying claims as fast as they are
// answered (no Retry-After honoured), on a hot coupon with several CLAIM_QUEUE_MAX settings and on a
// sold-out coupon, while one client claims a quiet coupon every 100 ms. Prints what the database
// committed per second (SQL), what clients were told, and the quiet coupon's latency.
// Env: BENCH_DURATION (default 10s), BENCH_CONNECTIONS (default 2500), BENCH_DATABASE_URL.
import postgres from "postgres";
import { build, createBenchDatabase, postJson, startService } from "./service";
import { parseSeconds, requireWrk, runWrk } from "./wrk";

interface Scenario {
  label: string;
  target: "hot" | "gone";
  settings: Record<string, string>;
  connections?: number;
}

const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 2500);
const SCENARIOS: Scenario[] = [
  { label: "hot coupon, unloaded (64 connections)", target: "hot", settings: {}, connections: 64 },
  { label: "hot coupon, CLAIM_QUEUE_MAX=10000", target: "hot", settings: {} },
  { label: "hot coupon, CLAIM_QUEUE_MAX=1000", target: "hot", settings: { CLAIM_QUEUE_MAX: "1000" } },
  { label: "hot coupon, CLAIM_QUEUE_MAX=50", target: "hot", settings: { CLAIM_QUEUE_MAX: "50" } },
  { label: "sold-out flood", target: "gone", settings: {} },
];

/** Claims `coupon` with a fresh user every 100 ms until `until`; returns each latency in ms. */
async function probe(baseUrl: string, coupon: string, until: number): Promise<{ ms: number[]; statuses: number[] }> {
  const ms: number[] = [];
  const statuses: number[] = [];
  for (let i = 0; Date.now() < until; i++) {
    const started = performance.now();
    const status = await fetch(`${baseUrl}/api/coupons/claim`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ user_id: `probe-${i}`, coupon_name: coupon }),
      signal: AbortSignal.timeout(30_000),
    }).then(
      async (res) => {
        await res.text();
        return res.status;
      },
      () => 0,
    );
    ms.push(performance.now() - started);
    statuses.push(status);
    await Bun.sleep(100);
  }
  return { ms, statuses };
}

const quantile = (sorted: number[], q: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;

async function main() {
  requireWrk();
  const seconds = parseSeconds(process.env.BENCH_DURATION ?? "10s", "BENCH_DURATION");
  await build();
  const database = await createBenchDatabase(
    process.env.BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres",
  );
  const sql = postgres(database.url, { max: 1, onnotice: () => {} });
  console.log("| scenario | connections | committed claims/s (SQL) | 201/s | 503/s | quiet coupon p50 / p99 / max |");
  console.log("| --- | --- | --- | --- | --- | --- |");
  try {
    for (const [n, scenario] of SCENARIOS.entries()) {
      const service = await startService(database.url, scenario.settings);
      try {
        const [hot, quiet, gone] = [`hot_${n}`, `quiet_${n}`, `gone_${n}`];
        for (const [name, amount] of [
          [hot, 100_000_000],
          [quiet, 100_000_000],
          [gone, 1],
        ] as const) {
          await postJson(`${service.baseUrl}/api/coupons`, { name, amount }, 201);
        }
        await postJson(`${service.baseUrl}/api/coupons/claim`, { user_id: "seed", coupon_name: gone }, 201);
        const target = scenario.target === "hot" ? hot : gone;
        const connections = scenario.connections ?? CONNECTIONS;
        const probing = probe(service.baseUrl, quiet, Date.now() + (seconds - 1) * 1000);
        const { result } = await runWrk({
          url: `${service.baseUrl}/api/coupons/claim`,
          connections,
          seconds,
          args: [target],
          servicePid: service.pid,
          databaseName: database.name,
        });
        const quietRun = await probing;
        const [row] = await sql<{ n: number }[]>`select count(*)::int as n from claims where coupon_name = ${target}`;
        const wall = result.duration_us / 1e6;
        const committed = ((row?.n ?? 0) - (scenario.target === "gone" ? 1 : 0)) / wall;
        const created = (result.statuses["201"] ?? 0) / wall;
        const refused = (result.statuses["503 SERVICE_UNAVAILABLE"] ?? 0) / wall;
        const ms = quietRun.ms.sort((a, b) => a - b);
        const failed = quietRun.statuses.filter((status) => status !== 201).length;
        const f = (x: number) => Math.round(x).toLocaleString("en-US");
        console.log(
          `| ${scenario.label} | ${connections} | ${f(committed)} | ${f(created)} | ${f(refused)} | ` +
            `${f(quantile(ms, 0.5))} / ${f(quantile(ms, 0.99))} / ${f(ms.at(-1) ?? 0)} ms` +
            `${failed ? ` (${failed} of ${ms.length} not 201)` : ""} |`,
        );
      } finally {
        await service.stop();
      }
    }
  } finally {
    await sql.end();
    await database.drop();
  }
}

await main();
