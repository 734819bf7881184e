// `bun bench/big-read.ts`: what reading one big coupon costs the service and the claims beside it.
// Builds the binary, seeds a coupon with BIG_READ_CLAIMS claimers (default 400,000, ~110-character ids)
// straight in SQL, then sends BIG_READ_GETS (default 20) GETs of it at once while one claim at a time
// goes to another coupon. Prints the service's peak RSS, each GET's status, time and bytes (checked
// against the expected body), and the claims' latency before and during the GETs.
// Env: BENCH_DATABASE_URL (admin URL, default postgres://postgres@127.0.0.1:5432/postgres),
// BENCH_SKIP_BUILD=1 to reuse dist/coupon-service, BENCH_SETTINGS="KEY=VALUE ..." for the service's environment
// (e.g. "REQUEST_TIMEOUT_MS=60000 DATABASE_STATEMENT_TIMEOUT_MS=60000" to let every GET finish).
import { readFileSync } from "node:fs";
import postgres from "postgres";
import { build, createBenchDatabase, postJson, type Service, startService } from "./service";

const CLAIMS = Number(process.env.BIG_READ_CLAIMS || 400_000);
const GETS = Number(process.env.BIG_READ_GETS || 20);
const IDLE_MS = 2000;

interface GetResult {
  status: number;
  headersMs: number;
  totalMs: number;
  bytes: number;
  /** "ok" (the expected body), "wrong body", or how the body failed. */
  body: string;
}

/** Resident set size of `pid` in MiB (VmRSS, or VmHWM for the peak since the process started). */
function rssMiB(pid: number, field: "VmRSS" | "VmHWM"): number {
  try {
    const line = readFileSync(`/proc/${pid}/status`, "utf8")
      .split("\n")
      .find((l) => l.startsWith(field));
    return Number(line?.match(/(\d+)/)?.[1] ?? 0) / 1024;
  } catch {
    return Number.NaN; // the process is gone
  }
}

const percentile = (values: number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
};
const summary = (label: string, values: number[]) =>
  `${label}: n=${values.length} p50=${percentile(values, 50).toFixed(1)} ms p99=${percentile(values, 99).toFixed(1)} ms max=${Math.max(...values).toFixed(1)} ms`;

/** Seeds `big` with CLAIMS claimers (sold out) and returns the sha256 of the body a GET must answer. */
async function seed(service: Service, databaseUrl: string): Promise<string> {
  await postJson(`${service.baseUrl}/api/coupons`, { name: "big", amount: CLAIMS }, 201);
  await postJson(`${service.baseUrl}/api/coupons`, { name: "other", amount: 100_000_000 }, 201);
  const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  try {
    await sql`insert into claims (user_id, coupon_name, seq)
      select 'user-' || g || '-' || repeat(md5(g::text), 3), 'big', g from generate_series(1, ${CLAIMS}::int) g order by g`;
    await sql`update coupons set remaining_amount = 0, last_seq = ${CLAIMS}::int where name = 'big'`;
    await sql`analyze claims`;
    const rows = await sql<{ user_id: string }[]>`select user_id from claims where coupon_name = 'big' order by id`;
    const body = JSON.stringify({
      name: "big",
      amount: CLAIMS,
      remaining_amount: 0,
      claimed_by: rows.map((r) => r.user_id),
    });
    return new Bun.CryptoHasher("sha256").update(body).digest("hex");
  } finally {
    await sql.end();
  }
}

/** One GET of `big`, its body hashed as it arrives (never held whole). */
async function getBig(baseUrl: string, expected: string): Promise<GetResult> {
  const start = performance.now();
  const response = await fetch(`${baseUrl}/api/coupons/big`).catch((error: Error) => error);
  if (response instanceof Error) {
    const failedMs = performance.now() - start;
    return {
      status: 0,
      headersMs: failedMs,
      totalMs: failedMs,
      bytes: 0,
      body: `no answer (${response.message.split(":")[0]})`,
    };
  }
  const headersMs = performance.now() - start;
  const hasher = new Bun.CryptoHasher("sha256");
  let bytes = 0;
  let body = "ok";
  try {
    for await (const chunk of response.body as ReadableStream<Uint8Array>) {
      hasher.update(chunk);
      bytes += chunk.byteLength;
    }
    if (response.status === 200 && hasher.digest("hex") !== expected) body = "wrong body";
    if (response.status !== 200) body = "problem";
  } catch (error) {
    body = `cut off (${error instanceof Error ? error.message.split(":")[0] : String(error)})`;
  }
  return { status: response.status, headersMs, totalMs: performance.now() - start, bytes, body };
}

/** Claims on `other`, one at a time, until `stop()`; returns each claim's latency in ms. */
function claimLoop(baseUrl: string) {
  const latencies: { at: number; ms: number; status: number }[] = [];
  let running = true;
  const done = (async () => {
    for (let i = 0; running; i++) {
      const start = performance.now();
      const response = await fetch(`${baseUrl}/api/coupons/claim`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ user_id: `claimer-${i}`, coupon_name: "other" }),
      }).catch(() => undefined);
      await response?.arrayBuffer();
      latencies.push({ at: start, ms: performance.now() - start, status: response?.status ?? 0 });
    }
  })();
  return {
    latencies,
    stop: async () => {
      running = false;
      await done;
    },
  };
}

async function main(): Promise<void> {
  const adminUrl = process.env.BENCH_DATABASE_URL || "postgres://postgres@127.0.0.1:5432/postgres";
  const database = await createBenchDatabase(adminUrl);
  let service: Service | undefined;
  try {
    if (process.env.BENCH_SKIP_BUILD !== "1") await build();
    const settings = Object.fromEntries(
      (process.env.BENCH_SETTINGS ?? "")
        .split(/\s+/)
        .filter(Boolean)
        .map((pair) => pair.split("=", 2) as [string, string]),
    );
    service = await startService(database.url, settings);
    if (Object.keys(settings).length > 0) console.log(`service settings: ${JSON.stringify(settings)}`);
    const { pid, baseUrl } = service;
    console.log(`seeding ${CLAIMS.toLocaleString("en-US")} claims on coupon "big" (database ${database.name})`);
    const expected = await seed(service, database.url);
    const idleRss = rssMiB(pid, "VmRSS");
    let peakRss = idleRss;
    let exited = false;
    const sampler = setInterval(() => {
      const rss = rssMiB(pid, "VmRSS");
      if (Number.isNaN(rss)) exited = true;
      else peakRss = Math.max(peakRss, rss);
    }, 20);
    const claims = claimLoop(baseUrl);
    await Bun.sleep(IDLE_MS);
    const getsStart = performance.now();
    console.log(`${GETS} concurrent GETs of "big", claims on "other" meanwhile`);
    const gets = await Promise.all(Array.from({ length: GETS }, () => getBig(baseUrl, expected)));
    const getsEnd = performance.now();
    await claims.stop();
    clearInterval(sampler);
    const hwm = rssMiB(pid, "VmHWM");
    if (exited) console.log("\nTHE SERVICE EXITED DURING THE GETS (its exit code follows)");

    console.log("\n| GET | status | headers ms | total ms | MB | body |\n| --- | --- | --- | --- | --- | --- |");
    gets.forEach((g, i) => {
      console.log(
        `| ${i + 1} | ${g.status} | ${g.headersMs.toFixed(0)} | ${g.totalMs.toFixed(0)} | ${(g.bytes / 1e6).toFixed(1)} | ${g.body} |`,
      );
    });
    const idle = claims.latencies.filter((c) => c.at < getsStart).map((c) => c.ms);
    const during = claims.latencies.filter((c) => c.at >= getsStart && c.at < getsEnd).map((c) => c.ms);
    const failed = claims.latencies.filter((c) => c.status !== 201).length;
    console.log(`\nGETs: all done after ${(getsEnd - getsStart).toFixed(0)} ms`);
    console.log(
      `service RSS: ${idleRss.toFixed(0)} MiB before the GETs, peak ${peakRss.toFixed(0)} MiB sampled (VmHWM ${hwm.toFixed(0)} MiB)`,
    );
    console.log(`claims on "other" (${failed} not 201):`);
    console.log(`  ${summary("before the GETs", idle)}`);
    console.log(`  ${summary("during the GETs", during)}`);
    await service.stop();
    service = undefined;
  } finally {
    service?.kill();
    await database.drop();
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(`big-read: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  },
);
