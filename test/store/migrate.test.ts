// Migrations: every generated file is embedded, concurrent start-ups apply them exactly once, and a
// migration that backfills does it right on a database an older release filled.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fingerprint } from "../../src/http/idempotency";
import { type BatchRequest, decideBatch } from "../../src/store/claims";
import { isDatabaseUnavailable, pgErrorCode } from "../../src/store/errors";
import { embeddedMigrations, runMigrations } from "../../src/store/migrate";
import { embeddedJournal, embeddedSql } from "../../src/store/migrations";
import { buildApp } from "../support/app";
import { claimsBy, releaseOf } from "../support/coupons";
import { createTestDatabase, type TestDatabase } from "../support/database";
import { client } from "../support/http";
import { expectStockInvariant } from "../support/invariant";

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
    await database.sql`insert into claims (user_id, coupon_name, seq) values ('u', 'direct', 1)`;
    const duplicate =
      await database.sql`insert into claims (user_id, coupon_name, seq) values ('u', 'direct', 2)`.catch((e) => e);
    expect(pgErrorCode(duplicate)).toBe("23505");
    const oversell = await database.sql`update coupons set remaining_amount = -1 where name = 'direct'`.catch((e) => e);
    expect(pgErrorCode(oversell)).toBe("23514");
    const orphan = await database.sql`insert into claims (user_id, coupon_name, seq) values ('u', 'nope', 1)`.catch(
      (e) => e,
    );
    expect(pgErrorCode(orphan)).toBe("23503");
    expect(isDatabaseUnavailable(orphan)).toBe(false);
  });
});

describe("0006_seq on a database filled by the release before it", () => {
  let database: TestDatabase;
  beforeAll(async () => {
    database = await createTestDatabase({ migrate: false });
  });
  afterAll(() => database.drop());

  /** The fingerprint the service gives `user`'s claim on `coupon`. */
  const fp = (coupon: string, user: string) => fingerprint("POST /api/coupons/claim", [coupon, user]);
  /** A claim with the Idempotency-Key `key`, as the service sends it. */
  const keyed = (coupon: string, user: string, key: string): BatchRequest => ({
    user,
    idempotency: { key, fingerprint: fp(coupon, user), ttlMs: 3_600_000 },
  });

  it("numbers each coupon's claims, held and released, 1..n in id order, sets last_seq, and replays old keys with them", async () => {
    const before = embeddedJournal.entries.findIndex((entry) => entry.tag === "0006_seq");
    await runMigrations(database.handle.db, embeddedMigrations().slice(0, before));
    const sql = database.sql;
    // Claims on two coupons interleaved, two under keys, two released and one claimed again, through the
    // functions that release called.
    await sql`insert into coupons (name, amount, remaining_amount) values ('A', 10, 10), ('B', 10, 10), ('C', 10, 10)`;
    await sql`select claim_batch('A', '{a,b}')`;
    await sql`select claim_batch('B', '{x}')`;
    await sql`select claim_keyed_batch('B', '{y}', '{key-held}', array[${fp("B", "y")}], 3600000)`;
    await sql`select claim_keyed_batch('A', '{z}', '{key-released}', array[${fp("A", "z")}], 3600000)`;
    await sql`select claim_release_batch('A', '{t,t}', '{a,z}')`;
    await sql`select claim_batch('A', '{a,c}')`;

    await runMigrations(database.handle.db);
    // It rebuilt the indexes it dropped to number the claims.
    const indexes = await sql`select indexname from pg_indexes where tablename = 'claims' order by indexname`;
    expect(indexes.map((index) => index.indexname)).toEqual([
      "claims_coupon_name_id_idx",
      "claims_pkey",
      "claims_user_id_coupon_name_key",
    ]);
    const seqs = await sql<{ coupon_name: string; user_id: string; seq: number; held: boolean }[]>`
      select coupon_name, user_id, seq, held from (
        select id, coupon_name, user_id, seq, true as held from claims
        union all
        select claim_id, coupon_name, user_id, seq, false from claim_releases
      ) s order by coupon_name, id`;
    expect(seqs.map((r) => `${r.coupon_name} ${r.user_id}:${r.seq}${r.held ? "" : " released"}`)).toEqual([
      "A a:1 released",
      "A b:2",
      "A z:3 released",
      "A a:4",
      "A c:5",
      "B x:1",
      "B y:2",
    ]);
    const coupons = await sql`select name, last_seq from coupons order by name`;
    expect(coupons.map((c) => [c.name, c.last_seq])).toEqual([
      ["A", 5],
      ["B", 2],
      ["C", 0],
    ]);
    for (const coupon of ["A", "B", "C"]) await expectStockInvariant(sql, coupon);

    // A key stored before 0006 holds no seq: its replay answers the seq of the claim it made, held or
    // released since, on either path.
    const { db } = database.handle;
    const held = await decideBatch(db, "B", [keyed("B", "y", "key-held")]);
    expect(held.decisions.map((d) => [d.outcome, d.replayed, d.seq])).toEqual([["created", true, 2]]);
    const released = await decideBatch(db, "A", [keyed("A", "z", "key-released"), await releaseOf(db, "A", "nobody")]);
    expect(released.decisions.map((d) => [d.outcome, d.seq])).toEqual([
      ["created", 3],
      ["claim_not_found", undefined],
    ]);
    // And the next claims go on from last_seq.
    expect((await decideBatch(db, "A", claimsBy(["d"]))).decisions.map((d) => d.seq)).toEqual([6]);
    expect((await decideBatch(db, "C", claimsBy(["d"]))).decisions.map((d) => d.seq)).toEqual([1]);
    await expectStockInvariant(sql, "A");
  });
});
