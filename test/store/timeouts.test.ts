// The server-side timeouts reach every statement of the pool, however the server takes them: as
// startup parameters (a direct connection), from the role's settings (a pooler that drops the startup
// parameters), or set in every transaction (a stock PgBouncer, which refuses them).
import { afterAll, beforeAll, describe, expect, it } from "bun:test";

import { sql } from "drizzle-orm";
import postgres from "postgres";
import { loadConfig } from "../../src/config";
import { type DatabaseHandle, openPostgres } from "../../src/store/client";
import { openClient } from "../../src/store/connect";
import { type Database, queryRows } from "../../src/store/database";
import { pgErrorCode } from "../../src/store/errors";
import { describeTimeouts, type TimeoutReport } from "../../src/store/timeouts";
import { createTestDatabase, type TestDatabase } from "../support/database";
import { holdAdvisoryLock } from "../support/locks";
import {
  findPgBouncer,
  type PgBouncer,
  SERVICE_STARTUP_PARAMETERS,
  STOCK_IGNORED_PARAMETERS,
  startPgBouncer,
} from "../support/pgbouncer";

// statement_timeout and lock_timeout; idle_in_transaction_session_timeout is twice that.
const TIMEOUT_MS = 300;
const CONFIGURED = { statement_timeout: "300ms", lock_timeout: "300ms", idle_in_transaction_session_timeout: "600ms" };

const installed = findPgBouncer() !== null;
if (!installed && !process.env.CI) {
  console.warn("test/store/timeouts.test.ts: the PgBouncer cases are skipped: pgbouncer is not installed");
}
const withPgBouncer = installed || process.env.CI ? describe : describe.skip;

let database: TestDatabase;
beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(() => database.drop());

let handles: DatabaseHandle[] = [];
/** The service's pool on `url`, as main.ts opens it; closed by closePools. */
function pool(url: string): DatabaseHandle {
  const handle = openPostgres(
    url,
    loadConfig({ DATABASE_URL: url, DATABASE_POOL_MAX: "2", DATABASE_STATEMENT_TIMEOUT_MS: String(TIMEOUT_MS) }),
  );
  handles.push(handle);
  return handle;
}
/** Closes every pool opened so far (before the PgBouncer they go through stops). */
async function closePools() {
  await Promise.all(handles.map((handle) => handle.close()));
  handles = [];
}

const settingsQuery = sql`select current_setting('statement_timeout') as statement_timeout,
  current_setting('lock_timeout') as lock_timeout,
  current_setting('idle_in_transaction_session_timeout') as idle_in_transaction_session_timeout,
  (select source from pg_settings where name = 'statement_timeout') as source, ${1}::int as n`;
/** The timeouts in force, and where statement_timeout came from: "session" when set in the transaction. */
type Settings = typeof CONFIGURED & { source: string };
/** The timeouts in force for a statement sent alone. */
const settingsAlone = async (db: Database) => (await queryRows<Settings>(db, settingsQuery))[0];
/** The same, for a statement in a transaction the service begins. */
const settingsInTransaction = (db: Database) =>
  db.transaction(async (tx) => (await queryRows<Settings>(tx, settingsQuery))[0]);
const timeoutsOf = ({ statement_timeout, lock_timeout, idle_in_transaction_session_timeout }: Settings) => ({
  statement_timeout,
  lock_timeout,
  idle_in_transaction_session_timeout,
});

/** The SQLSTATE `work` fails with, or "none". */
const failure = (work: Promise<unknown>) =>
  work.then(
    () => "none",
    (error) => pgErrorCode(error) ?? String(error),
  );

/** Asserts that statements that run, wait for a lock, or idle in a transaction too long are cut. */
function itCutsEveryBound(db: () => Database) {
  it("cuts a statement that runs too long, alone or in a transaction (statement_timeout)", async () => {
    expect(await failure(db().execute(sql`select pg_sleep(${10})`))).toBe("57014");
    expect(await failure(db().transaction((tx) => tx.execute(sql`select pg_sleep(${10})`)))).toBe("57014");
  });

  it("cuts a statement that waits too long for a lock, and leaves nothing waiting", async () => {
    const lock = await holdAdvisoryLock(database.sql, 42);
    try {
      // lock_timeout, or statement_timeout (as long, and started first): either way the wait ends.
      const cut = await failure(db().execute(sql`select pg_advisory_xact_lock(${42}::bigint)`));
      expect(["55P03", "57014"]).toContain(cut);
      const waiting = await database.sql`select pid from pg_stat_activity
        where datname = current_database() and wait_event_type = 'Lock'`;
      expect(waiting.length).toBe(0);
    } finally {
      await lock.release();
    }
  });

  it("ends a transaction left idle too long (idle_in_transaction_session_timeout)", async () => {
    const outcome = await failure(
      db().transaction(async (tx) => {
        await tx.execute(sql`select ${1}::int`);
        await Bun.sleep(10 * TIMEOUT_MS);
        await tx.execute(sql`select ${2}::int`);
      }),
    );
    expect(outcome).not.toBe("none");
  });
}

describe("a direct connection", () => {
  let handle: DatabaseHandle;
  beforeAll(() => {
    handle = pool(database.url);
  });
  afterAll(closePools);

  it("takes the timeouts as startup parameters, and says so", async () => {
    const report = (await handle.timeouts()) as TimeoutReport;
    expect(report.enforced).toBe("session");
    expect(report.refused).toBeUndefined();
    expect(describeTimeouts(report)).toEqual({
      level: "info",
      msg: "database timeouts set at connect",
      fields: {
        statement_timeout_ms: TIMEOUT_MS,
        lock_timeout_ms: TIMEOUT_MS,
        idle_in_transaction_session_timeout_ms: 2 * TIMEOUT_MS,
        source: "client",
      },
    });
  });

  it("sends a statement as it is, under the timeouts", async () => {
    const alone = await settingsAlone(handle.db);
    expect(alone?.source).toBe("client");
    expect(timeoutsOf(alone as Settings)).toEqual(CONFIGURED);
    expect(timeoutsOf((await settingsInTransaction(handle.db)) as Settings)).toEqual(CONFIGURED);
  });

  itCutsEveryBound(() => handle.db);
});

withPgBouncer("behind a stock PgBouncer, which refuses the startup parameters", () => {
  let bouncer: PgBouncer;
  let handle: DatabaseHandle;
  beforeAll(async () => {
    bouncer = await startPgBouncer(database.url, { ignoreStartupParameters: STOCK_IGNORED_PARAMETERS });
    handle = pool(bouncer.url);
  });
  afterAll(async () => {
    await closePools();
    await bouncer?.stop();
  });

  it("connects without them, finds the server without them, and sets them in every transaction", async () => {
    const report = (await handle.timeouts()) as TimeoutReport;
    expect(report).toMatchObject({
      enforced: "transaction",
      refused: "unsupported startup parameter: statement_timeout",
      role: "postgres",
    });
    expect(report.server.statement_timeout).toEqual({ ms: 0, source: "default" });
    const line = describeTimeouts(report);
    expect(line.level).toBe("warn");
    expect(line.fields.cost).toBe("one more round trip per transaction, three more per statement outside one");
  });

  it("runs a statement sent alone in a transaction of its own that sets them first", async () => {
    const alone = await settingsAlone(handle.db);
    expect(alone?.source).toBe("session");
    expect(timeoutsOf(alone as Settings)).toEqual(CONFIGURED);
    expect(timeoutsOf((await settingsInTransaction(handle.db)) as Settings)).toEqual(CONFIGURED);
  });

  it("bounds a statement sent as a tag, on any client openClient opens", async () => {
    const config = loadConfig({ DATABASE_URL: bouncer.url, DATABASE_STATEMENT_TIMEOUT_MS: String(TIMEOUT_MS) });
    const { sql: tagged } = openClient(bouncer.url, config, { max: 1 });
    try {
      const [row] = await tagged<{ t: string }[]>`select current_setting('statement_timeout') as t, ${1}::int`;
      expect(row?.t).toBe(CONFIGURED.statement_timeout);
      expect(await failure(tagged`select pg_sleep(${10})`)).toBe("57014");
    } finally {
      await tagged.end();
    }
  });

  it("leaves no timeout behind on the server connections it shared (set locally, not for the session)", async () => {
    const other = postgres(bouncer.url, { max: 1, onnotice: () => {} });
    try {
      for (let i = 0; i < 5; i++) {
        await handle.db.execute(sql`select ${i}::int`);
        const [row] = await other`select current_setting('statement_timeout') as t, ${i}::int`;
        expect(row?.t).toBe("0");
      }
    } finally {
      await other.end();
    }
  });

  itCutsEveryBound(() => handle.db);
});

withPgBouncer("behind a PgBouncer that drops the startup parameters, with the role's own settings", () => {
  const role = `coupon_timeouts_${Math.random().toString(36).slice(2, 8)}`;
  let bouncers: PgBouncer[] = [];
  /** A pool through a PgBouncer that logs in as the role, with the role's settings `given`. */
  const asRole = async (given: Record<string, string>) => {
    const dbName = new URL(database.url).pathname.slice(1);
    for (const [name, value] of Object.entries(given))
      await database.sql.unsafe(`alter role ${role} in database ${dbName} set ${name} = '${value}'`);
    const url = new URL(database.url);
    url.username = role;
    const bouncer = await startPgBouncer(url.href, { ignoreStartupParameters: SERVICE_STARTUP_PARAMETERS });
    bouncers.push(bouncer);
    return pool(bouncer.url);
  };
  beforeAll(async () => {
    await database.sql.unsafe(`create role ${role} login`);
  });
  afterAll(async () => {
    await closePools();
    await Promise.all(bouncers.map((bouncer) => bouncer.stop()));
    bouncers = [];
    await database.sql.unsafe(`drop role if exists ${role}`);
  });

  it("uses the role's settings where they are the configured ones, with no extra round trip", async () => {
    const handle = await asRole(CONFIGURED);
    const report = (await handle.timeouts()) as TimeoutReport;
    expect(report).toMatchObject({ enforced: "session", role });
    expect(report.refused).toBeUndefined();
    expect(describeTimeouts(report)).toMatchObject({
      level: "info",
      msg: "database timeouts applied by the server's settings",
      fields: { source: "database user" },
    });
    const alone = await settingsAlone(handle.db);
    expect(alone?.source).toBe("database user");
    expect(timeoutsOf(alone as Settings)).toEqual(CONFIGURED);
  });

  it("sets them in every transaction where the role's settings are other values", async () => {
    const handle = await asRole({ ...CONFIGURED, lock_timeout: "10s" });
    const report = (await handle.timeouts()) as TimeoutReport;
    expect(report.enforced).toBe("transaction");
    expect(report.server.lock_timeout).toEqual({ ms: 10_000, source: "database user" });
    expect(describeTimeouts(report).fields.hint).toContain(`ALTER ROLE ${role} SET lock_timeout = '300ms'`);
    expect(timeoutsOf((await settingsAlone(handle.db)) as Settings)).toEqual(CONFIGURED);
  });
});
