// The sweep of expired Idempotency-Keys.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "bun:test";
import { loadConfig } from "../../src/config";
import type { Logger } from "../../src/log";
import { openPostgres } from "../../src/store/client";
import { startKeyCleanup } from "../../src/store/keys";
import { createTestDatabase, type TestDatabase } from "../support/database";
import { until } from "../support/replicas";

/** A logger that keeps its lines. */
function capturingLog() {
  const lines: { level: string; msg: string; fields?: Record<string, unknown> }[] = [];
  const at =
    (level: string) =>
    (msg: string, fields?: Record<string, unknown>): void =>
      void lines.push({ level, msg, ...(fields ? { fields } : {}) });
  const log: Logger = { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
  return { log, lines };
}

describe("startKeyCleanup", () => {
  let database: TestDatabase;
  beforeAll(async () => {
    database = await createTestDatabase();
  });
  afterAll(() => database.drop());
  beforeEach(async () => {
    await database.sql`truncate idempotency_keys`;
  });

  /** Inserts keys `prefix`1..`count` expiring `expiresInMs` from now (negative: already expired). */
  const insertKeys = (prefix: string, count: number, expiresInMs: number) =>
    database.sql`insert into idempotency_keys (key, fingerprint, outcome, created_at, expires_at)
      select ${prefix}::text || g, 'fp', 'created', now() - interval '1 day',
        now() + ${expiresInMs}::float8 * interval '1 millisecond'
      from generate_series(1, ${count}::int) g`;
  const keysLike = async (prefix: string) =>
    (
      await database.sql<
        { key: string }[]
      >`select key from idempotency_keys where key like ${`${prefix}%`} order by key`
    ).map((row) => row.key);
  const deletedCounts = (lines: ReturnType<typeof capturingLog>["lines"]) =>
    lines.filter((line) => line.msg === "expired idempotency keys deleted").map((line) => line.fields?.deleted);

  it("deletes only the rows whose expires_at has passed", async () => {
    await insertKeys("old-", 3, -1000);
    await insertKeys("live-", 2, 3_600_000);
    const { log, lines } = capturingLog();
    const stop = startKeyCleanup(database.handle.db, { intervalMs: 10, log });
    try {
      await until(async () => (await keysLike("old-")).length === 0, "expired keys deleted");
      expect(await keysLike("live-")).toEqual(["live-1", "live-2"]);
      expect(deletedCounts(lines)).toEqual([3]);
    } finally {
      stop();
    }
  });

  it("deletes more than a thousand expired rows in one sweep", async () => {
    await insertKeys("many-", 2500, -1000);
    await insertKeys("keep-", 1, 3_600_000);
    const { log, lines } = capturingLog();
    const stop = startKeyCleanup(database.handle.db, { intervalMs: 10, log });
    try {
      await until(() => deletedCounts(lines).length > 0, "a sweep that deleted");
      expect(deletedCounts(lines)[0]).toBe(2500);
      expect(await keysLike("many-")).toEqual([]);
      expect(await keysLike("keep-")).toEqual(["keep-1"]);
    } finally {
      stop();
    }
  });

  it("skips an expired row another transaction holds locked, without waiting for it, and deletes it later", async () => {
    await insertKeys("locked-", 1, -1000);
    await insertKeys("free-", 1, -1000);
    const locker = await database.sql.reserve();
    const { log, lines } = capturingLog();
    let stop = () => {};
    try {
      await locker`begin`;
      await locker`select key from idempotency_keys where key = 'locked-1' for update`;
      stop = startKeyCleanup(database.handle.db, { intervalMs: 10, log });
      // The sweep finishes (its line is written) while the lock is still held: it did not wait.
      await until(() => deletedCounts(lines).length > 0, "a sweep that deleted");
      expect(deletedCounts(lines)).toEqual([1]);
      expect(await keysLike("free-")).toEqual([]);
      expect(await keysLike("locked-")).toEqual(["locked-1"]);
      await locker`commit`;
      await until(async () => (await keysLike("locked-")).length === 0, "the unlocked key deleted");
      expect(deletedCounts(lines)).toEqual([1, 1]);
    } finally {
      stop();
      await locker`rollback`.catch(() => {});
      locker.release();
    }
  });

  it("logs a failed sweep at warn and keeps sweeping until one succeeds", async () => {
    await insertKeys("retry-", 2, -1000);
    // A pool whose lock_timeout is short, and the table locked: each sweep fails until the lock goes.
    const config = loadConfig({ DATABASE_URL: database.url, DATABASE_STATEMENT_TIMEOUT_MS: "100" });
    const pool = openPostgres(database.url, config);
    const locker = await database.sql.reserve();
    const { log, lines } = capturingLog();
    let stop = () => {};
    try {
      await locker`begin`;
      await locker`lock table idempotency_keys in access exclusive mode`;
      stop = startKeyCleanup(pool.db, { intervalMs: 10, log });
      const warned = () => lines.filter((line) => line.level === "warn");
      await until(() => warned().length >= 2, "two failed sweeps", 10_000);
      expect(warned()[0]?.msg).toBe("deleting expired idempotency keys failed; retrying later");
      expect(warned()[0]?.fields?.err).toBeDefined();
      await locker`rollback`;
      await until(() => deletedCounts(lines).length > 0, "a sweep that deleted");
      expect(deletedCounts(lines)).toEqual([2]);
      expect(await keysLike("retry-")).toEqual([]);
    } finally {
      stop();
      await locker`rollback`.catch(() => {});
      locker.release();
      await pool.close();
    }
  }, 15_000);
});
