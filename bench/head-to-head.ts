// `bun bench/head-to-head.ts <checkout A> <checkout B>`: one row of `bun run bench`, compared head to
// head between two builds on this noisy VM. Each round starts each checkout's dist/coupon-service
// (build both first with `bun run build`) on a fresh database through that checkout's own
// bench/service.ts, warms up 2 s, runs `wrk -t2 -c256 -d8s -s bench/claim.lua`, then 4 s of
// GET /health/live for the machine's ceiling at that moment; the order alternates every round.
// Env: BENCH_KIND=soldout (default) | hot, BENCH_ROUNDS (default 4).
import { join } from "node:path";

const roots = process.argv.slice(2);
if (roots.length !== 2) throw new Error("usage: bun bench/head-to-head.ts <checkout A> <checkout B>");
const kind = process.env.BENCH_KIND === "hot" ? "hot" : "soldout";
const rounds = Number(process.env.BENCH_ROUNDS || 4);
const script = join(import.meta.dir, "claim.lua");

/** Requests per second (every status) of one wrk run. */
function wrk(seconds: number, url: string, args: string[]): number {
  const run = Bun.spawnSync(["wrk", "-t2", "-c256", `-d${seconds}s`, "-s", script, url, ...args]);
  const line = run.stdout
    .toString()
    .split("\n")
    .find((text) => text.startsWith("BENCH_RESULT "));
  if (!line) throw new Error(`wrk failed: ${run.stderr.toString()}`);
  const result = JSON.parse(line.slice("BENCH_RESULT ".length));
  const answered = Object.values(result.statuses as Record<string, number>).reduce((a, b) => a + b, 0);
  return Math.round(answered / (result.duration_us / 1e6));
}

const figures = new Map(roots.map((root) => [root, { row: [] as number[], live: [] as number[] }]));
for (let round = 0; round < rounds; round++) {
  for (const root of round % 2 ? [...roots].reverse() : roots) {
    const service = await import(join(root, "bench", "service.ts"));
    const database = await service.createBenchDatabase(
      process.env.BENCH_DATABASE_URL || "postgres://postgres@127.0.0.1:5432/postgres",
    );
    const running = await service.startService(database.url, {});
    try {
      const stock = kind === "hot" ? 100_000_000 : 1;
      await service.postJson(`${running.baseUrl}/api/coupons`, { name: "row", amount: stock }, 201);
      if (kind === "soldout")
        await service.postJson(`${running.baseUrl}/api/coupons/claim`, { user_id: "u", coupon_name: "row" }, 201);
      const claimUrl = `${running.baseUrl}/api/coupons/claim`;
      wrk(2, claimUrl, ["row"]);
      const mine = figures.get(root);
      mine?.row.push(wrk(8, claimUrl, ["row"]));
      mine?.live.push(wrk(4, `${running.baseUrl}/health/live`, []));
      console.log(`${root}: ${kind} ${mine?.row.at(-1)} req/s, /health/live ${mine?.live.at(-1)} req/s`);
    } finally {
      await running.stop();
      await database.drop();
    }
  }
}
for (const [root, { row, live }] of figures) {
  console.log(
    `${root}: ${kind} ${Math.min(...row)}–${Math.max(...row)}, /health/live ${Math.min(...live)}–${Math.max(...live)}`,
  );
}
