// The start-up self-test of the claim lock: it passes on PostgreSQL, and refuses an engine whose
// advisory lock functions are stubs that report success (as CockroachDB's did, cockroach#13546),
// simulated by such stubs in a schema ahead of pg_catalog on the database's search_path.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { loadConfig } from "../../src/config";
import { openPostgres } from "../../src/db/client";
import { LockCheckError } from "../../src/db/lock-check";
import { createTestDatabase, type TestDatabase } from "../support/database";
import { runToExit } from "../support/service";

let real: TestDatabase;
let stubbed: TestDatabase;

beforeAll(async () => {
  [real, stubbed] = await Promise.all([createTestDatabase(), createTestDatabase()]);
  await stubbed.sql.unsafe(`
    create schema stub;
    create function stub.pg_advisory_xact_lock(bigint) returns void language sql as 'select';
    create function stub.pg_try_advisory_xact_lock(bigint) returns boolean language sql as 'select true';
  `);
  const name = new URL(stubbed.url).pathname.slice(1);
  await stubbed.sql.unsafe(`alter database ${name} set search_path = stub, pg_catalog, public`);
});
afterAll(async () => {
  await Promise.all([real.drop(), stubbed.drop()]);
});

const handleOn = (url: string) => openPostgres(url, loadConfig({ DATABASE_URL: url, DATABASE_POOL_MAX: "1" }));

describe("the advisory lock self-test", () => {
  it("passes on PostgreSQL, even with a pool of one connection", async () => {
    const handle = handleOn(real.url);
    try {
      await handle.checkLock();
    } finally {
      await handle.close();
    }
  });

  it("refuses stub lock functions that report success, naming the engine and the reason", async () => {
    const handle = handleOn(stubbed.url);
    try {
      const failure = await handle.checkLock().then(
        () => undefined,
        (error: unknown) => error,
      );
      expect(failure).toBeInstanceOf(LockCheckError);
      expect((failure as Error).message).toMatch(
        /^refusing to start: pg_try_advisory_xact_lock took a lock another session held \(advisory locks do not exclude\); claims would not be serialised per coupon and could oversell\. Engine: PostgreSQL \d+/,
      );
    } finally {
      await handle.close();
    }
  });

  it("keeps the service from starting there: exit 1 before it listens, the reason in the log", async () => {
    const run = await runToExit([], { DATABASE_URL: stubbed.url });
    expect(run.code).toBe(1);
    expect(run.logs.some((line) => line.msg === "listening")).toBe(false);
    expect(run.stdout).toContain("advisory locks do not exclude");
  });
});
