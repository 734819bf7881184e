// MIGRATION_DATABASE_URL: migrations run over a connection of their own at that URL (the primary,
// where the pool goes through a pooler), never over the pool's. Proved with a pool whose role may not
// create anything: migrating over it fails, migrating over the owner's URL succeeds, and the pool then
// serves claims.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import postgres from "postgres";
import { loadConfig } from "../../src/config";
import { openDatabase } from "../../src/store/client";
import { buildApp } from "../support/app";
import { createTestDatabase, type TestDatabase } from "../support/database";
import { client } from "../support/http";

let database: TestDatabase;
const role = `coupon_app_${Math.random().toString(36).slice(2, 8)}`;
let appUrl: string;

beforeAll(async () => {
  database = await createTestDatabase({ migrate: false });
  await database.sql.unsafe(`create role ${role} login password 'app'`);
  // PostgreSQL 15 and later give PUBLIC no CREATE on schema public: this role can create nothing.
  await database.sql.unsafe(`revoke create on schema public from public`);
  const url = new URL(database.url);
  url.username = role;
  url.password = "app";
  appUrl = url.href;
});
afterAll(async () => {
  await database.drop();
  const admin = postgres(process.env.TEST_DATABASE_URL as string, { max: 1, onnotice: () => {} });
  await admin.unsafe(`drop role if exists ${role}`);
  await admin.end();
});

describe("MIGRATION_DATABASE_URL", () => {
  it("is a validated URL like DATABASE_URL", () => {
    expect(() => loadConfig({ DATABASE_URL: appUrl, MIGRATION_DATABASE_URL: "mysql://x" })).toThrow(
      "MIGRATION_DATABASE_URL=",
    );
  });

  it("without it, migrations run over the pool's role (here: refused, nothing can be created)", async () => {
    const handle = await openDatabase(loadConfig({ DATABASE_URL: appUrl }));
    try {
      const failure = await handle.migrate().then(
        () => undefined,
        (error: Error & { cause?: { message?: string } }) => error.cause?.message ?? error.message,
      );
      expect(failure).toMatch(/permission denied/);
    } finally {
      await handle.close();
    }
  });

  it("runs the migrations over its own URL, then the pool serves claims on the migrated schema", async () => {
    const handle = await openDatabase(loadConfig({ DATABASE_URL: appUrl, MIGRATION_DATABASE_URL: database.url }));
    try {
      await handle.migrate();
      const [owner] = await database.sql<{ owner: string }[]>`
        select tableowner as owner from pg_tables where tablename = 'claims'`;
      expect(owner?.owner).not.toBe(role);
      // What an operator grants the service's role on a migrated schema.
      await database.sql.unsafe(`grant select, insert, update, delete on all tables in schema public to ${role}`);
      await database.sql.unsafe(`grant usage on schema drizzle to ${role}`);
      await database.sql.unsafe(`grant select on all tables in schema drizzle to ${role}`);
      const api = client(buildApp(handle.db).app);
      expect((await api.post("/api/coupons", { name: "DIRECT", amount: 1 })).status).toBe(201);
      expect((await api.post("/api/coupons/claim", { user_id: "u", coupon_name: "DIRECT" })).status).toBe(201);
      // Applied once, and a second start finds nothing left to do.
      await handle.migrate();
      const [applied] = await database.sql<
        { n: number }[]
      >`select count(*)::int as n from drizzle.__drizzle_migrations`;
      expect(applied?.n).toBe((await import("../../src/store/migrations")).embeddedJournal.entries.length);
    } finally {
      await handle.close();
    }
  });
});
