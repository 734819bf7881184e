// What an oversized claim costs the event loop: claims whose user_id is 8,000 / 100,000 / 1,000,000
// characters, answered in-process (app.handle) on a throwaway database; prints the status and the time
// per request (the request objects are built before the clock starts).
//   bun bench/body-cap.ts        Env: BENCH_DATABASE_URL or TEST_DATABASE_URL (admin)
import { loadConfig } from "../src/config";
import { openPostgres } from "../src/store/client";
import { buildApp } from "../test/support/app";
import { createBenchDatabase } from "./service";

const ADMIN_URL =
  process.env.BENCH_DATABASE_URL ?? process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const ROUNDS = 5;

const database = await createBenchDatabase(ADMIN_URL);
const handle = openPostgres(database.url, loadConfig({ DATABASE_URL: database.url }));
try {
  await handle.migrate();
  const { app } = buildApp(handle.db);
  for (const length of [8_000, 100_000, 1_000_000]) {
    const body = JSON.stringify({ user_id: "u".repeat(length), coupon_name: "BENCH" });
    const headers = { "content-type": "application/json", "content-length": String(Buffer.byteLength(body)) };
    const requests = Array.from(
      { length: ROUNDS },
      () => new Request("http://localhost/api/coupons/claim", { method: "POST", headers, body }),
    );
    const ms: number[] = [];
    let status = 0;
    for (const request of requests) {
      const started = performance.now();
      const response = await app.handle(request);
      await response.text();
      ms.push(performance.now() - started);
      status = response.status;
    }
    ms.sort((a, b) => a - b);
    console.log(
      `user_id of ${length} characters: ${status}, ${ms[0]?.toFixed(2)} ms best, ${ms[ROUNDS >> 1]?.toFixed(2)} ms median`,
    );
  }
} finally {
  await handle.close();
  await database.drop();
}
