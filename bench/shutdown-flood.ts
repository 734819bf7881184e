// SIGTERM under a claim flood: how long after the signal the process exits, against SHUTDOWN_DELAY_MS +
// SHUTDOWN_GRACE_MS. wrk floods a coupon (it sells out, then answers from memory) while five claims on
// another coupon are held by a lock, so the grace period always runs out.
//   bun bench/shutdown-flood.ts [path/to/binary]      (default: bun src/main.ts)
// Env: BENCH_DATABASE_URL or TEST_DATABASE_URL (admin), SHUTDOWN_GRACE_MS (3000), SHUTDOWN_DELAY_MS (0),
// BENCH_CONNECTIONS (256), BENCH_RUNS (3). Needs wrk.
import { join } from "node:path";
import postgres from "postgres";
import { createBenchDatabase } from "./service";
import { requireWrk } from "./wrk";

const ROOT = join(import.meta.dir, "..");
const ADMIN_URL =
  process.env.BENCH_DATABASE_URL ?? process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const GRACE = process.env.SHUTDOWN_GRACE_MS ?? "3000";
const DELAY = process.env.SHUTDOWN_DELAY_MS ?? "0";
const CONNECTIONS = process.env.BENCH_CONNECTIONS ?? "256";
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const command = process.argv[2] ? [process.argv[2]] : ["bun", join(ROOT, "src/main.ts")];

const post = (url: string, body: unknown) =>
  fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });

async function run(): Promise<Record<string, number>> {
  const database = await createBenchDatabase(ADMIN_URL);
  const env = { ...process.env, DATABASE_URL: database.url, PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "info" };
  const child = Bun.spawn(command, {
    env: { ...env, SHUTDOWN_GRACE_MS: GRACE, SHUTDOWN_DELAY_MS: DELAY },
    stdout: "pipe",
    stderr: "inherit",
  });
  const events = new Map<string, number>(); // log message -> its time (ms since epoch)
  let port: number | undefined;
  const reading = (async () => {
    let buffer = "";
    const decoder = new TextDecoder();
    for await (const chunk of child.stdout) {
      buffer += decoder.decode(chunk, { stream: true });
      const lines = buffer.split("\n");
      buffer = lines.pop() ?? "";
      for (const line of lines) {
        if (line.includes('"msg":"request"')) continue;
        const entry = JSON.parse(line);
        events.set(entry.msg, Date.parse(entry.time));
        port ??= entry.port;
      }
    }
  })();
  while (!port) await Bun.sleep(20);
  const base = `http://127.0.0.1:${port}`;
  await post(`${base}/api/coupons`, { name: "FLOOD", amount: 1000 });
  await post(`${base}/api/coupons`, { name: "STUCK", amount: 100 });
  const locker = postgres(database.url, { max: 1, onnotice: () => {} });
  await locker`select pg_advisory_lock(hashtextextended('STUCK', 0))`;
  const stuck = Array.from({ length: 5 }, (_, i) =>
    post(`${base}/api/coupons/claim`, { user_id: `stuck-${i}`, coupon_name: "STUCK" }).catch(() => undefined),
  );
  const script = join(import.meta.dir, "claim.lua");
  const wrk = Bun.spawn(
    ["wrk", "-t2", `-c${CONNECTIONS}`, "-d60s", "-s", script, `${base}/api/coupons/claim`, "FLOOD"],
    {
      stdout: "ignore",
      stderr: "ignore",
    },
  );
  await Bun.sleep(3000);
  const killedAt = Date.now();
  child.kill("SIGTERM");
  const code = await child.exited;
  const exitSeen = Date.now();
  wrk.kill();
  await Promise.all([wrk.exited, reading, ...stuck]);
  await locker.end();
  await database.drop();
  const handled = events.get("shutting down: draining in-flight requests") ?? Number.NaN;
  const budget = Number(DELAY) + Number(GRACE);
  return {
    exit_code: code,
    signal_to_handler_ms: handled - killedAt,
    handler_to_grace_over_ms: (events.get("grace period over; closing remaining connections") ?? Number.NaN) - handled,
    handler_to_stopped_ms: (events.get("stopped") ?? Number.NaN) - handled,
    handler_to_deadline_exit_ms:
      (events.get("shutdown deadline passed; exiting with work still open") ?? Number.NaN) - handled,
    signal_to_exit_ms: exitSeen - killedAt,
    overrun_ms: exitSeen - killedAt - budget,
  };
}

requireWrk();
console.log(`${command.join(" ")}: SHUTDOWN_DELAY_MS=${DELAY} SHUTDOWN_GRACE_MS=${GRACE}, wrk -c${CONNECTIONS}`);
for (let i = 0; i < RUNS; i++) console.log(JSON.stringify(await run()));
