// The pool never sends a statement behind another one on the same connection (postgres.js
// `max_pipeline: 0` in postgresOptions). Behind PgBouncer in transaction pooling a pipelined statement
// is lost: PgBouncer hands the server connection back at the first statement's answer, with the
// second already sent to it, and the second never gets an answer. Checked here through a real
// PgBouncer on a pool of one connection, for every shape of statement the service sends.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { sql } from "drizzle-orm";
import postgres from "postgres";
import { loadConfig } from "../../src/config";
import { createLogger } from "../../src/log";
import { type DatabaseHandle, openPostgres, ping } from "../../src/store/client";
import { postgresOptions } from "../../src/store/connect";
import type { Database } from "../../src/store/database";
import { withDeadline } from "../../src/store/deadline";
import { startKeyCleanup } from "../../src/store/keys";
import { migrationsApplied } from "../../src/store/migrate";
import { buildApp } from "../support/app";
import { createTestDatabase, type TestDatabase } from "../support/database";
import { client } from "../support/http";
import { findPgBouncer, type PgBouncer, startPgBouncer } from "../support/pgbouncer";

// A statement that gets no answer in this long never will (each takes milliseconds).
const ANSWER_DEADLINE_MS = 5000;

const installed = findPgBouncer() !== null;
if (!installed && !process.env.CI) {
  console.warn("test/store/pipelining.test.ts skipped: pgbouncer is not installed (apt-get install pgbouncer)");
}
const withPgBouncer = installed || process.env.CI ? describe : describe.skip;

let database: TestDatabase;
beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(() => database.drop());

describe("postgresOptions", () => {
  it("lets no statement follow another on a connection before its answer", () => {
    const config = loadConfig({ DATABASE_URL: "postgres://localhost/db" });
    expect(postgresOptions(config).max_pipeline).toBe(0);
  });

  it("keeps transactions working with nothing pipelined: BEGIN still reserves its connection", async () => {
    // postgres.js 3.4.9 skipped the hook that reserves a transaction's connection whenever the pipeline
    // was full, so at max_pipeline 0 every transaction failed (upstream #1189, #1210; patched).
    const config = loadConfig({ DATABASE_URL: database.url, DATABASE_POOL_MAX: "1" });
    const one = postgres(database.url, postgresOptions(config));
    try {
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          i % 2
            ? one.begin(async (tx) => (await tx`select ${i}::int as n, txid_current() as xid`)[0]?.n)
            : one`select ${i}::int as n`.then((rows) => rows[0]?.n),
        ),
      );
      expect(results).toEqual(Array.from({ length: 20 }, (_, i) => i));
    } finally {
      await one.end({ timeout: 1 });
    }
  });
});

withPgBouncer("the pool behind PgBouncer in transaction pooling, one connection", () => {
  let bouncer: PgBouncer;
  let handle: DatabaseHandle;
  let db: Database;
  beforeAll(async () => {
    bouncer = await startPgBouncer(database.url, { poolSize: 2 });
    handle = openPostgres(bouncer.url, loadConfig({ DATABASE_URL: bouncer.url, DATABASE_POOL_MAX: "1" }));
    db = handle.db;
  });
  afterAll(async () => {
    await handle?.close();
    await bouncer?.stop();
  });

  /** Every statement shape the service sends through the pool, each returning what it read. */
  const shapes: Record<string, (db: Database, i: number) => Promise<unknown>> = {
    "a parameterless statement": (db) => db.execute(sql`select 1 as n`).then(() => "answered"),
    "a parameterless write (the key sweep's shape)": (db) =>
      db.execute(sql`delete from idempotency_keys where expires_at < 'epoch'::timestamptz`).then(() => "answered"),
    "a parameterised statement": (db, i) => db.execute(sql`select ${i}::int as n`).then(() => "answered"),
    "a transaction of parameterless statements": (db) =>
      db.transaction(async (tx) => void (await tx.execute(sql`select txid_current()`))).then(() => "answered"),
    "a transaction of parameterised statements": (db, i) =>
      db
        .transaction(async (tx) => void (await tx.execute(sql`select ${i}::int, txid_current()`)))
        .then(() => "answered"),
    "a readiness ping": (db) => ping(db).then((ok) => (ok ? "answered" : "ping failed")),
    "the migrations check": (db) => migrationsApplied(db).then((ok) => (ok ? "answered" : "not applied")),
  };

  it("answers every statement of every shape fired at once, in any order", async () => {
    const kinds = Object.keys(shapes);
    // Every kind behind every other: 7 kinds, stepped by 3 (coprime), 20 times over.
    const fired = Array.from(
      { length: 20 * kinds.length },
      (_, i) => kinds[(i * 3 + Math.floor(i / kinds.length)) % kinds.length] as string,
    );
    const answers = await Promise.all(
      fired.map((kind, i) =>
        withDeadline((shapes[kind] as (db: Database, i: number) => Promise<unknown>)(db, i), ANSWER_DEADLINE_MS).then(
          (answer) => `${kind}: ${answer}`,
          (error: Error) => `${kind}: ${error.message}`,
        ),
      ),
    );
    expect(answers).toEqual(fired.map((kind) => `${kind}: answered`));
  }, 30_000);

  it("answers every claim batch while the expired-key sweep runs on the same connection", async () => {
    const { app } = buildApp(db, { timeoutMs: ANSWER_DEADLINE_MS });
    const api = client(app);
    await api.createCoupon("swept", 1_000_000);
    // The sweep as main.ts starts it, every few milliseconds rather than every minute.
    const stop = startKeyCleanup(db, { intervalMs: 2, log: createLogger("silent") });
    try {
      const statuses: number[] = [];
      // A lost batch answers 503 at its deadline and leaves the connection stuck: stop at the first.
      for (let round = 0; round < 20 && !statuses.some((status) => status !== 201); round++) {
        const answers = await Promise.all(
          Array.from({ length: 5 }, (_, i) => api.claim(`buyer-${round}-${i}`, "swept")),
        );
        statuses.push(...answers.map((answer) => answer.status));
        await Bun.sleep(3);
      }
      expect(statuses).toEqual(Array(100).fill(201));
    } finally {
      stop();
    }
  }, 60_000);
});
