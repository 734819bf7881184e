// The service as a real process behind a stock PgBouncer in transaction pooling: its usual
// `ignore_startup_parameters = extra_float_digits` refuses the timeouts the service sends at connect
// (unsupported startup parameter: statement_timeout). The service must start anyway, say what it did
// about its timeouts, answer claims, and still have a statement that waits too long cut by the server.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { createTestDatabase, type TestDatabase } from "../support/database";
import { expectStockInvariant } from "../support/invariant";
import { holdAdvisoryLock } from "../support/locks";
import { findPgBouncer, type PgBouncer, STOCK_IGNORED_PARAMETERS, startPgBouncer } from "../support/pgbouncer";
import { type Service, startService } from "../support/service";

const installed = findPgBouncer() !== null;
if (!installed && !process.env.CI) {
  console.warn("test/stress/stock-pooler.test.ts skipped: pgbouncer is not installed (apt-get install pgbouncer)");
}
const withPgBouncer = installed || process.env.CI ? describe : describe.skip;

// The service's statement_timeout and lock_timeout; far below the request deadline, so a claim cut by
// the server is answered long before the service itself would give up on it.
const STATEMENT_TIMEOUT_MS = 500;
const REQUEST_TIMEOUT_MS = 60_000;

withPgBouncer("the service behind a stock PgBouncer (ignore_startup_parameters = extra_float_digits)", () => {
  let database: TestDatabase;
  let bouncer: PgBouncer;
  let service: Service;

  beforeAll(async () => {
    database = await createTestDatabase({ migrate: false });
    bouncer = await startPgBouncer(database.url, { poolSize: 2, ignoreStartupParameters: STOCK_IGNORED_PARAMETERS });
    service = await startService({
      DATABASE_URL: bouncer.url,
      LISTEN_DATABASE_URL: database.url,
      DATABASE_POOL_MAX: "4",
      DATABASE_STATEMENT_TIMEOUT_MS: String(STATEMENT_TIMEOUT_MS),
      REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS),
    });
  }, 30_000);
  afterAll(async () => {
    service?.child.kill("SIGKILL");
    await service?.child.exited;
    await bouncer?.stop();
    await database?.drop();
  }, 20_000);

  it("starts and says in its start-up log that it sets its timeouts in every transaction, and why", () => {
    const line = service.logs().find((l) => l.msg?.startsWith("database timeouts"));
    expect(line).toMatchObject({
      level: "warn",
      msg: "database timeouts set in every transaction: the server's sessions do not have them",
      statement_timeout_ms: STATEMENT_TIMEOUT_MS,
      lock_timeout_ms: STATEMENT_TIMEOUT_MS,
      idle_in_transaction_session_timeout_ms: 2 * STATEMENT_TIMEOUT_MS,
      refused: "unsupported startup parameter: statement_timeout",
    });
    expect(line?.hint).toContain(`ALTER ROLE postgres SET statement_timeout = '${STATEMENT_TIMEOUT_MS}ms'`);
  });

  it("answers claims, every 201 stored", async () => {
    expect((await service.api.createCoupon("stock", 5)).status).toBe(201);
    const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => service.api.claim(`buyer-${i}`, "stock")));
    expect(answers.map((a) => a.status).sort()).toEqual([...Array(5).fill(201), ...Array(15).fill(409)]);
    const stored = await database.sql<{ user_id: string }[]>`select user_id from claims where coupon_name = 'stock'`;
    const won = answers.filter((a) => a.status === 201).map((a) => a.body.user_id);
    expect(stored.map((row) => row.user_id).sort()).toEqual(won.sort());
    await expectStockInvariant(database.sql, "stock");
  });

  it("has a claim that waits for its coupon's lock too long cut by the server: 503, nothing left waiting", async () => {
    expect((await service.api.createCoupon("locked", 5)).status).toBe(201);
    // Another session holds the coupon's claim lock (claim_batch's key) until the claim is answered.
    const lock = await holdAdvisoryLock(database.sql, "locked");
    try {
      const answer = await service.api.claim("waiter", "locked");
      // Answered by the server's lock_timeout, not by the service's 60 s deadline: the statement is gone.
      expect(answer.status).toBe(503);
      const waiting = await database.sql<{ state: string; wait_event_type: string | null; query: string }[]>`
        select state, wait_event_type, query from pg_stat_activity
        where datname = current_database() and pid <> pg_backend_pid() and wait_event_type = 'Lock'`;
      expect([...waiting]).toEqual([]);
    } finally {
      await lock.release();
    }
    const [row] = await database.sql<
      { n: number }[]
    >`select count(*)::int as n from claims where coupon_name = 'locked'`;
    expect(row?.n).toBe(0);
    await expectStockInvariant(database.sql, "locked");
  }, 90_000);
});
