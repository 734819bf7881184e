// The start-up self-test of the claim lock: it passes on PostgreSQL, and refuses an engine whose
// advisory lock functions are stubs that report success (as CockroachDB's did, cockroach#13546),
// simulated by such stubs in a schema ahead of pg_catalog on the database's search_path. Spies placed
// the same way, which call PostgreSQL's own functions, show what the self-test asked of the database.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { loadConfig } from "../../src/config";
import { openPostgres } from "../../src/store/client";
import { LockCheckError } from "../../src/store/lock-check";
import { createTestDatabase, type TestDatabase } from "../support/database";
import { runToExit, startService } from "../support/service";

let real: TestDatabase;
let stubbed: TestDatabase;
let spied: TestDatabase;

beforeAll(async () => {
  [real, stubbed, spied] = await Promise.all([createTestDatabase(), createTestDatabase(), createTestDatabase()]);
  await stubbed.sql.unsafe(`
    create schema stub;
    create function stub.pg_advisory_xact_lock(bigint) returns void language sql as 'select';
    create function stub.pg_try_advisory_xact_lock(bigint) returns boolean language sql as 'select true';
  `);
  // Each call to the lock functions is recorded with the session that made it and what it got.
  await spied.sql.unsafe(`
    create schema spy;
    create table spy.calls (id serial primary key, fn text not null, session int not null, taken boolean);
    create function spy.pg_advisory_xact_lock(key bigint) returns void language plpgsql as $$
      begin
        perform pg_catalog.pg_advisory_xact_lock(key);
        insert into spy.calls (fn, session) values ('lock', pg_backend_pid());
      end $$;
    create function spy.pg_try_advisory_xact_lock(key bigint) returns boolean language plpgsql as $$
      declare taken boolean := pg_catalog.pg_try_advisory_xact_lock(key);
      begin
        insert into spy.calls (fn, session, taken) values ('try', pg_backend_pid(), taken);
        return taken;
      end $$;
  `);
  for (const [database, schema] of [
    [stubbed, "stub"],
    [spied, "spy"],
  ] as const) {
    const name = new URL(database.url).pathname.slice(1);
    await database.sql.unsafe(`alter database ${name} set search_path = ${schema}, pg_catalog, public`);
  }
});
afterAll(async () => {
  await Promise.all([real.drop(), stubbed.drop(), spied.drop()]);
});

const handleOn = (url: string) => openPostgres(url, loadConfig({ DATABASE_URL: url, DATABASE_POOL_MAX: "1" }));

describe("the advisory lock self-test", () => {
  it("passes on PostgreSQL, even with a pool of one connection", async () => {
    const handle = handleOn(spied.url);
    try {
      await handle.checkLock();
    } finally {
      await handle.close();
    }
    // It passed because it proved the lock: a second session's try failed while it was held, and took it once free.
    const calls = await spied.sql<{ fn: string; session: number; taken: boolean | null }[]>`
      select fn, session, taken from spy.calls order by id`;
    expect(calls.map(({ fn, taken }) => [fn, taken])).toEqual([
      ["lock", null],
      ["try", false],
      ["try", true],
    ]);
    const [holder, prober] = calls.map((call) => call.session);
    expect(prober).not.toBe(holder);
  });

  it("never refuses PostgreSQL while other replicas run the same self-test at the same moment", async () => {
    // Replicas of one rollout start together: each self-test must hold and probe a lock no other one
    // can be holding, or a working engine is refused as if its locks did not exclude.
    const replicas = Array.from({ length: 6 }, () => handleOn(real.url));
    try {
      for (let round = 0; round < 15; round++) {
        const outcomes = await Promise.allSettled(replicas.map((replica) => replica.checkLock()));
        const refusals = outcomes.flatMap((outcome) =>
          outcome.status === "rejected" ? [String((outcome.reason as Error).message)] : [],
        );
        expect({ round, refusals }).toEqual({ round, refusals: [] });
      }
    } finally {
      await Promise.all(replicas.map((replica) => replica.close()));
    }
  }, 30_000);

  it("lets three services started at the same moment on one empty database all start", async () => {
    const empty = await createTestDatabase({ migrate: false });
    const started = await Promise.allSettled([0, 1, 2].map(() => startService({ DATABASE_URL: empty.url })));
    try {
      expect(started.map((service) => service.status)).toEqual(["fulfilled", "fulfilled", "fulfilled"]);
    } finally {
      for (const service of started) if (service.status === "fulfilled") service.value.child.kill("SIGKILL");
      await Promise.all(started.map((service) => (service.status === "fulfilled" ? service.value.child.exited : 0)));
      await empty.drop();
    }
  }, 30_000);

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
