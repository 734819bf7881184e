// Migrations: every generated file is embedded, and concurrent start-ups apply them exactly once.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { isDatabaseUnavailable, pgErrorCode } from "../../src/store/errors";
import { embeddedJournal, embeddedSql } from "../../src/store/migrations";
import { buildApp } from "../support/app";
import { createTestDatabase, type TestDatabase } from "../support/database";
import { client } from "../support/http";

const folder = join(import.meta.dir, "../../drizzle");

describe("embedded migrations", () => {
  it("embed every SQL file drizzle-kit generated, byte for byte, in journal order", () => {
    const files = readdirSync(folder)
      .filter((f) => f.endsWith(".sql"))
      .map((f) => f.replace(/\.sql$/, ""));
    const journal = JSON.parse(readFileSync(join(folder, "meta/_journal.json"), "utf8"));
    expect(embeddedJournal).toEqual(journal);
    expect(journal.entries.map((e: { tag: string }) => e.tag)).toEqual(files.sort());
    for (const tag of files) expect(embeddedSql[tag]).toBe(readFileSync(join(folder, `${tag}.sql`), "utf8"));
  });
});

describe("runMigrations", () => {
  let database: TestDatabase;
  beforeAll(async () => {
    database = await createTestDatabase({ migrate: false });
  });
  afterAll(() => database.drop());

  it("reports not ready (503) while migrations are pending", async () => {
    const api = client(buildApp(database.handle.db).app);
    const res = await api.get("/health/ready");
    expect(res.status).toBe(503);
    expect(res.body.checks.migrations).toBe("pending");
  });

  it("applies them once when five replicas start together on an empty database", async () => {
    await Promise.all(Array.from({ length: 5 }, () => database.handle.migrate()));
    const applied = await database.sql`select count(*)::int as n from drizzle.__drizzle_migrations`;
    expect(applied[0]?.n).toBe(embeddedJournal.entries.length);
    const tables = await database.sql`
      select table_name from information_schema.tables where table_schema = 'public' order by table_name`;
    expect(tables.map((t) => t.table_name)).toEqual([
      "claim_releases",
      "claims",
      "coupon_fences",
      "coupons",
      "idempotency_keys",
    ]);
    const ready = await client(buildApp(database.handle.db).app).get("/health/ready");
    expect(ready.status).toBe(200);
  });

  it("enforces the schema's guarantees even against direct SQL", async () => {
    await database.sql`insert into coupons (name, amount, remaining_amount) values ('direct', 1, 1)`;
    await database.sql`insert into claims (user_id, coupon_name) values ('u', 'direct')`;
    const duplicate = await database.sql`insert into claims (user_id, coupon_name) values ('u', 'direct')`.catch(
      (e) => e,
    );
    expect(pgErrorCode(duplicate)).toBe("23505");
    const oversell = await database.sql`update coupons set remaining_amount = -1 where name = 'direct'`.catch((e) => e);
    expect(pgErrorCode(oversell)).toBe("23514");
    const orphan = await database.sql`insert into claims (user_id, coupon_name) values ('u', 'nope')`.catch((e) => e);
    expect(pgErrorCode(orphan)).toBe("23503");
    expect(isDatabaseUnavailable(orphan)).toBe(false);
  });
});
