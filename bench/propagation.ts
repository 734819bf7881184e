// `bun run bench:propagation`: how long a change made on one replica takes to reach another. Two
// instances of the built binary share one throwaway database. A coupon is paused through A, and B
// answers its claims from memory (SALE_PAUSED); then A resumes it, and a client claims on B, one
// claim at a time, until one wins. The same for a release: B answers a sold-out coupon from memory,
// A releases its one claim. The time from A's 200 to B's first 201 bounds the propagation
// (notification, invalidation, and one claim round trip). Measured idle, then with B under a sold-out
// flood from wrk (256 connections) so the notification competes with traffic on B's event loop. Each
// write's own time on A (send to answer) is reported too: a release or a resume is fenced and waits
// out MEMORY_LEASE_MS before it is made, so that no replica answers the old state once it has answered.
// Env: BENCH_TRIALS (default 50), BENCH_DATABASE_URL (admin URL).
import { build, createBenchDatabase, postJson, type Service, startService } from "./service";
import { killWrk, requireWrk, runWrk } from "./wrk";

const TRIALS = Number(process.env.BENCH_TRIALS || 50);

async function call(method: string, url: string, body: unknown): Promise<{ status: number; code?: string }> {
  const response = await fetch(url, {
    method,
    headers: { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  const json = (await response.json()) as { code?: string };
  return { status: response.status, code: json.code };
}

const percentile = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;

/** Milliseconds from each write on A to B's first win, and of the write itself on A, sorted. */
interface Trials {
  propagation: number[];
  write: number[];
}

const sorted = (times: number[]) => times.sort((x, y) => x - y);

/** Over TRIALS pause/resume rounds: each resume on A to B's first win. */
async function trials(a: Service, b: Service, coupon: string): Promise<Trials> {
  const patch = (active: boolean) => call("PATCH", `${a.baseUrl}/api/coupons/${coupon}`, { active });
  const claimOnB = (user: string) =>
    call("POST", `${b.baseUrl}/api/coupons/claim`, { user_id: user, coupon_name: coupon });
  const times: number[] = [];
  const writes: number[] = [];
  let n = 0;
  for (let trial = 0; trial < TRIALS; trial++) {
    await patch(false);
    // Until B answers the pause from memory (it learns it from the change feed or its first refusal).
    for (let i = 0; i < 100 && (await claimOnB(`${coupon}-warm-${n++}`)).code !== "SALE_PAUSED"; i++);
    await Bun.sleep(20);
    const sent = performance.now();
    const resumed = await patch(true);
    if (resumed.status !== 200) throw new Error(`resume answered ${resumed.status}`);
    const start = performance.now();
    writes.push(start - sent);
    while ((await claimOnB(`${coupon}-u-${n++}`)).status !== 201) {
      if (performance.now() - start > 10_000) throw new Error("B never saw the resume");
    }
    times.push(performance.now() - start);
  }
  return { propagation: sorted(times), write: sorted(writes) };
}

/** Each release on A to B's first win, B having answered the coupon SOLD_OUT from memory. */
async function releaseTrials(a: Service, b: Service, coupon: string): Promise<Trials> {
  const claimOnB = (user: string) =>
    call("POST", `${b.baseUrl}/api/coupons/claim`, { user_id: user, coupon_name: coupon });
  let holder = `${coupon}-first`;
  if ((await claimOnB(holder)).status !== 201) throw new Error("the first claim did not win");
  const times: number[] = [];
  const writes: number[] = [];
  let n = 0;
  for (let trial = 0; trial < TRIALS; trial++) {
    for (let i = 0; i < 100 && (await claimOnB(`${coupon}-warm-${n++}`)).code !== "SOLD_OUT"; i++);
    await Bun.sleep(20); // B learns the sell-out from its refusal
    const sent = performance.now();
    const released = await call("DELETE", `${a.baseUrl}/api/coupons/${coupon}/claims/${holder}`, undefined);
    if (released.status !== 200) throw new Error(`release answered ${released.status}`);
    const start = performance.now();
    writes.push(start - sent);
    for (;;) {
      holder = `${coupon}-u-${n++}`;
      if ((await claimOnB(holder)).status === 201) break;
      if (performance.now() - start > 10_000) throw new Error("B never saw the release");
    }
    times.push(performance.now() - start);
  }
  return { propagation: sorted(times), write: sorted(writes) };
}

function line(label: string, times: number[]): void {
  const f = (ms: number) => `${ms.toFixed(1)} ms`;
  console.log(
    `${label}: p50 ${f(percentile(times, 50))}, p90 ${f(percentile(times, 90))}, p99 ${f(percentile(times, 99))}, max ${f(times.at(-1) ?? Number.NaN)} (${times.length} trials)`,
  );
}

/** "resume, idle": from A's answer to B's first win; and the write's own time on A. */
function report(label: string, { propagation, write }: Trials): void {
  line(label, propagation);
  line(`  its ${label.split(",")[0]} answered on A in`, write);
}

async function main(): Promise<void> {
  requireWrk();
  await build();
  const database = await createBenchDatabase(
    process.env.BENCH_DATABASE_URL || "postgres://postgres@127.0.0.1:5432/postgres",
  );
  const services: Service[] = [];
  try {
    const a = await startService(database.url, {});
    services.push(a);
    const b = await startService(database.url, {});
    services.push(b);
    await postJson(`${a.baseUrl}/api/coupons`, { name: "idle", amount: 1_000_000 }, 201);
    await postJson(`${a.baseUrl}/api/coupons`, { name: "loaded", amount: 1_000_000 }, 201);
    await postJson(`${a.baseUrl}/api/coupons`, { name: "gone", amount: 1 }, 201);
    await postJson(`${b.baseUrl}/api/coupons/claim`, { user_id: "first", coupon_name: "gone" }, 201);

    report("resume, idle", await trials(a, b, "idle"));
    await postJson(`${a.baseUrl}/api/coupons`, { name: "released", amount: 1 }, 201);
    report("release, idle", await releaseTrials(a, b, "released"));
    const flood = runWrk({
      url: `${b.baseUrl}/api/coupons/claim`,
      connections: 256,
      seconds: 600,
      args: ["gone"],
      servicePid: b.pid,
      databaseName: database.name,
    });
    await Bun.sleep(1000);
    report("resume, B under a sold-out flood", await trials(a, b, "loaded"));
    await postJson(`${a.baseUrl}/api/coupons`, { name: "released-loaded", amount: 1 }, 201);
    report("release, B under a sold-out flood", await releaseTrials(a, b, "released-loaded"));
    killWrk();
    await flood.catch(() => {}); // killed on purpose: its figures are not the point
    await Promise.all(services.map((service) => service.stop()));
    services.length = 0;
  } finally {
    for (const service of services) service.kill();
    await database.drop();
  }
}

await main();
