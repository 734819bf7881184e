// The Idempotency-Key pieces that live outside the claim statement: the header's parsing, the
// fingerprint, the in-process turns of one key, and the sweep of expired keys.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "bun:test";
import { loadConfig } from "../../src/config";
import { createKeyTurns, fingerprint, idempotencyKey, startKeyCleanup } from "../../src/coupons/idempotency";
import { openPostgres } from "../../src/db/client";
import { AppError } from "../../src/errors";
import type { Logger } from "../../src/log";
import { createTestDatabase, type TestDatabase } from "../support/database";
import { until } from "../support/replicas";

const KEY_RULE =
  "Idempotency-Key: must be 1..255 printable ASCII characters (a quoted string counts without its quotes)";

/** The error idempotencyKey throws for `header`, or undefined when it throws none. */
function refusal(header: string): unknown {
  try {
    idempotencyKey(header);
  } catch (error) {
    return error;
  }
  return undefined;
}

describe("idempotencyKey", () => {
  it("answers undefined without the header", () => {
    expect(idempotencyKey(null)).toBeUndefined();
    expect(idempotencyKey(undefined)).toBeUndefined();
  });

  it("takes a bare value as it is, quotes and backslashes inside included", () => {
    expect(idempotencyKey("order-42")).toBe("order-42");
    expect(idempotencyKey("8e03978e-40d5-43e8-bc93-6894a57f9324")).toBe("8e03978e-40d5-43e8-bc93-6894a57f9324");
    expect(idempotencyKey('a"b\\c')).toBe('a"b\\c');
    expect(idempotencyKey(" padded ")).toBe(" padded ");
  });

  it('takes a quoted structured-field string without its quotes, with \\" and \\\\ unescaped', () => {
    expect(idempotencyKey('"order-42"')).toBe("order-42");
    expect(idempotencyKey('"say \\"hi\\""')).toBe('say "hi"');
    expect(idempotencyKey('"\\\\\\""')).toBe('\\"');
    expect(idempotencyKey('"a\\\\\\"b"')).toBe('a\\"b');
  });

  it("takes an escaped backslash anywhere in a quoted string", () => {
    expect(idempotencyKey('"C:\\\\keys"')).toBe("C:\\keys");
    expect(idempotencyKey('"\\\\"')).toBe("\\");
    expect(idempotencyKey('"a\\\\"')).toBe("a\\");
  });

  it("counts the length of a quoted string without its quotes: 255 characters inside pass, 256 do not", () => {
    expect(idempotencyKey(`"${"k".repeat(255)}"`)).toBe("k".repeat(255));
    expect(refusal(`"${"k".repeat(256)}"`)).toBeInstanceOf(AppError);
  });

  it("accepts 255 characters and refuses 256", () => {
    expect(idempotencyKey("k".repeat(255))).toBe("k".repeat(255));
    expect(refusal("k".repeat(256))).toBeInstanceOf(AppError);
  });

  it.each([
    ["empty", ""],
    ["an empty quoted string", '""'],
    ["256 characters", "x".repeat(256)],
    ["all spaces", "   "],
    ["a quoted string of spaces", '"  "'],
    ["non-ASCII", "clé"],
    ["an emoji", "key-🔑"],
    ["a tab", "a\tb"],
    ["a newline", "a\nb"],
    ["NUL", "a\u0000b"],
    ["DEL", "a\u007fb"],
    ["an unknown escape in a quoted string", '"a\\nb"'],
    ["a lone quote inside a quoted string", '"a"b"'],
    ["a trailing backslash inside a quoted string", '"ab\\"'],
    ["an escaped backslash then a lone quote", '"a\\\\"b"'],
    ["a control character inside a quoted string", '"a\u0001b"'],
  ])("refuses %s with VALIDATION_FAILED and the rule as detail", (_, header) => {
    const error = refusal(header);
    expect(error).toBeInstanceOf(AppError);
    expect({ code: (error as AppError).code, detail: (error as AppError).message }).toEqual({
      code: "VALIDATION_FAILED",
      detail: KEY_RULE,
    });
  });
});

describe("fingerprint", () => {
  const CREATE = "POST /api/coupons";
  const base = ["spring", 100, new Date("2026-03-01T09:00:00Z"), null] as const;

  it("is stable: the same route and equal fields give the same URL-safe SHA-256", () => {
    const once = fingerprint(CREATE, base);
    expect(fingerprint(CREATE, ["spring", 100, new Date("2026-03-01T09:00:00.000Z"), null])).toBe(once);
    expect(once).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });

  it("differs by route for the same fields (keys are global, not per route)", () => {
    const fields = ["spring", "user-1"];
    const prints = ["POST /api/coupons/claim", "DELETE /api/coupons/{name}/claims/{user_id}", CREATE].map((route) =>
      fingerprint(route, fields),
    );
    expect(new Set(prints).size).toBe(3);
  });

  it("differs when any one field differs", () => {
    const variants = [
      base,
      ["summer", 100, base[2], null],
      ["spring", 101, base[2], null],
      ["spring", 100, new Date("2026-03-01T09:00:00.001Z"), null],
      ["spring", 100, null, null],
      ["spring", 100, base[2], new Date("2026-03-02T09:00:00Z")],
    ];
    expect(new Set(variants.map((fields) => fingerprint(CREATE, fields))).size).toBe(variants.length);
  });

  it("keeps field boundaries and types apart", () => {
    const route = "POST /api/coupons/claim";
    expect(fingerprint(route, ["ab", "c"])).not.toBe(fingerprint(route, ["a", "bc"]));
    expect(fingerprint(route, ["a", 1])).not.toBe(fingerprint(route, ["a", "1"]));
    expect(fingerprint(route, ["a", null])).not.toBe(fingerprint(route, ["a", "null"]));
    expect(fingerprint(route, ["a", "b"])).not.toBe(fingerprint(route, ["b", "a"]));
  });
});

/** A promise with its resolve and reject at hand. */
function deferred<T = void>() {
  let resolve: (value: T) => void = () => {};
  let reject: (error: unknown) => void = () => {};
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const later = () => performance.now() + 10_000;

describe("createKeyTurns", () => {
  const settled = () => false;

  it("makes a second take of a key wait for the first to finish, then runs it", async () => {
    const turns = createKeyTurns();
    const events: string[] = [];
    const first = deferred();
    const a = turns.take(
      "k",
      later(),
      async () => {
        events.push("a start");
        await first.promise;
        events.push("a end");
        return "a";
      },
      settled,
    );
    const b = turns.take(
      "k",
      later(),
      async () => {
        events.push("b start");
        return "b";
      },
      settled,
    );
    await Bun.sleep(20);
    expect(events).toEqual(["a start"]);
    expect(turns.size).toBe(1);
    first.resolve();
    expect(await Promise.all([a, b])).toEqual(["a", "b"]);
    expect(events).toEqual(["a start", "a end", "b start"]);
    expect(turns.size).toBe(0);
  });

  it("runs the takes of one key one at a time, each exactly once", async () => {
    const turns = createKeyTurns();
    let active = 0;
    let most = 0;
    const ran: number[] = [];
    const takes = Array.from({ length: 5 }, (_, i) =>
      turns.take(
        "k",
        later(),
        async () => {
          most = Math.max(most, ++active);
          await Bun.sleep(2);
          ran.push(i);
          active--;
          return i;
        },
        settled,
      ),
    );
    expect(await Promise.all(takes)).toEqual([0, 1, 2, 3, 4]);
    expect(most).toBe(1);
    expect([...ran].sort()).toEqual([0, 1, 2, 3, 4]);
  });

  it("answers in_use to a take whose deadline passes while it waits, and never runs it", async () => {
    const turns = createKeyTurns();
    const first = deferred();
    const a = turns.take("k", later(), () => first.promise.then(() => "a"), settled);
    let ranB = false;
    const b = turns.take(
      "k",
      performance.now() + 30,
      async () => {
        ranB = true;
        return "b";
      },
      settled,
    );
    expect(await b).toBe("in_use");
    first.resolve();
    expect(await a).toBe("a");
    await Bun.sleep(10);
    expect(ranB).toBe(false);
    expect(turns.size).toBe(0);
  });

  it("never makes takes of different keys wait for each other", async () => {
    const turns = createKeyTurns();
    const first = deferred();
    const a = turns.take("k1", later(), () => first.promise.then(() => "a"), settled);
    expect(await turns.take("k2", later(), async () => "b", settled)).toBe("b");
    expect(turns.size).toBe(1);
    first.resolve();
    expect(await a).toBe("a");
  });

  it("frees the key when run() throws: the error reaches its caller, a waiting take gets in_use, a later one runs", async () => {
    const turns = createKeyTurns();
    const first = deferred<string>();
    const a = turns.take("k", later(), () => first.promise, settled);
    let ranB = false;
    const b = turns.take(
      "k",
      later(),
      async () => {
        ranB = true;
        return "b";
      },
      settled,
    );
    first.reject(new Error("batch failed"));
    await expect(a).rejects.toThrow("batch failed");
    expect(await b).toBe("in_use");
    expect(ranB).toBe(false);
    expect(turns.size).toBe(0);
    expect(await turns.take("k", later(), async () => "c", settled)).toBe("c");
  });

  it("answers in_use to the takes waiting on one that ended unsettled (no answer by its deadline), then runs later ones", async () => {
    const turns = createKeyTurns();
    const first = deferred<string>();
    const unsettled = (result: string) => result === "unconfirmed";
    const a = turns.take("k", later(), () => first.promise, unsettled);
    const b = turns.take("k", later(), async () => "b", unsettled);
    const c = turns.take("k", later(), async () => "c", unsettled);
    first.resolve("unconfirmed");
    expect(await Promise.all([a, b, c])).toEqual(["unconfirmed", "in_use", "in_use"]);
    expect(turns.size).toBe(0);
    expect(await turns.take("k", later(), async () => "d", unsettled)).toBe("d");
  });
});

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
