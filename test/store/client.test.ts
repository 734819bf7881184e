// The PostgreSQL pool's driver settings: what the service sends must mean the same on a direct
// connection and on a server connection handed out by a transaction pooler.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { sql } from "drizzle-orm";
import { loadConfig } from "../../src/config";
import { type DatabaseHandle, openPostgres, ping } from "../../src/store/client";
import { createTestDatabase, type TestDatabase } from "../support/database";

let database: TestDatabase;
let handle: DatabaseHandle;
beforeAll(async () => {
  database = await createTestDatabase();
  // One connection, so both transactions below run on the same one.
  handle = openPostgres(database.url, loadConfig({ DATABASE_URL: database.url, DATABASE_POOL_MAX: "1" }));
});
afterAll(async () => {
  await handle.close();
  await database.drop();
});

describe("openPostgres", () => {
  it("never reports a transaction committed after the server rolled it back", async () => {
    // A first transaction: a driver that prepares named statements has now prepared its `commit`.
    await handle.db.transaction(async (tx) => void (await tx.execute(sql`select 1`)));
    // Behind a transaction pooler the next transaction can run on a server connection that never saw
    // those statements; DEALLOCATE ALL makes this one forget them. With named statements the driver's
    // `commit` then fails, is retried inside the aborted transaction, and PostgreSQL rolls it back.
    const outcome = await handle.db
      .transaction(async (tx) => {
        await tx.execute(sql`deallocate all`);
        await tx.execute(sql`insert into coupons (name, amount, remaining_amount) values ('kept', 1, 1)`);
      })
      .then(
        () => "committed",
        (error: Error) => `failed: ${error.message}`,
      );
    const [row] = await database.sql<{ n: number }[]>`select count(*)::int as n from coupons where name = 'kept'`;
    expect({ outcome, stored: row?.n }).toEqual({ outcome: "committed", stored: 1 });
  });

  it("answers a readiness ping", async () => {
    expect(await ping(handle.db)).toBe("ok");
  });
});
