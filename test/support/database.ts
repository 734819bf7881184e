// A freshly created PostgreSQL database per test file, so the suite never touches existing data.
import { afterAll, beforeAll } from "bun:test";
import postgres from "postgres";
import { loadConfig } from "../../src/config";
import { type DatabaseHandle, openPostgres } from "../../src/store/client";

export interface TestDatabase {
  url: string;
  handle: DatabaseHandle;
  /** A raw postgres.js client on the same database, for assertions in SQL. */
  sql: postgres.Sql;
  /** Closes every connection and drops the database. */
  drop(): Promise<void>;
}

function adminUrl(): string {
  const url = process.env.TEST_DATABASE_URL;
  if (!url) throw new Error("TEST_DATABASE_URL is not set and no container was started (see test/setup.ts)");
  return url;
}

/** Creates an empty database, migrated unless `migrate: false`. */
export async function createTestDatabase(options: { migrate?: boolean; poolMax?: number } = {}): Promise<TestDatabase> {
  const name = `coupon_test_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;
  const admin = postgres(adminUrl(), { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${name}`);
  await admin.end();
  const url = new URL(adminUrl());
  url.pathname = `/${name}`;
  const config = loadConfig({ DATABASE_URL: url.href, DATABASE_POOL_MAX: String(options.poolMax ?? 10) });
  const handle = openPostgres(url.href, config);
  if (options.migrate !== false) await handle.migrate();
  const sql = postgres(url.href, { max: 2, onnotice: () => {} });
  return {
    url: url.href,
    handle,
    sql,
    async drop() {
      await Promise.all([handle.close(), sql.end()]);
      const cleanup = postgres(adminUrl(), { max: 1, onnotice: () => {} });
      await cleanup.unsafe(`drop database if exists ${name} with (force)`);
      await cleanup.end();
    },
  };
}

/**
 * A fresh migrated database for the enclosing file or describe block: created in its beforeAll and
 * dropped in its afterAll. Its fields may be read from then on (in hooks and tests, not at load).
 */
export function databaseForSuite(options: { poolMax?: number } = {}): TestDatabase {
  let current: TestDatabase | undefined;
  beforeAll(async () => {
    current = await createTestDatabase(options);
  });
  afterAll(() => current?.drop());
  const database = () => {
    if (!current) throw new Error("the suite's database is read before its beforeAll ran");
    return current;
  };
  return {
    get url() {
      return database().url;
    },
    get handle() {
      return database().handle;
    },
    get sql() {
      return database().sql;
    },
    drop: () => database().drop(),
  };
}
