// Embedded mode: the same schema, migrations and claim SQL on PGlite (the folder lock: lock.test.ts).
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { sql } from "drizzle-orm";
import { type DatabaseHandle, openPglite } from "../../src/store/client";
import { queryRows } from "../../src/store/database";
import { buildApp } from "../support/app";
import { type Client, client } from "../support/http";

describe("the service on embedded PGlite", () => {
  let handle: DatabaseHandle;
  let api: Client;
  beforeAll(async () => {
    handle = await openPglite("memory://");
    await handle.migrate();
    await handle.migrate(); // idempotent, as on every restart
    api = client(buildApp(handle.db).app);
  });
  afterAll(() => handle.close());

  it("runs with a 4 MB buffer cache and 5 backend slots, and a commit still writes its WAL before it answers", async () => {
    const [settings] = await queryRows<Record<string, string>>(
      handle.db,
      sql`select current_setting('shared_buffers') as shared_buffers, current_setting('max_connections') as max_connections,
        current_setting('synchronous_commit') as synchronous_commit, current_setting('fsync') as fsync`,
    );
    // fsync off is PGlite's own, as before: a commit's WAL reaches the kernel, which keeps it if the process dies.
    expect(settings).toEqual({ shared_buffers: "4MB", max_connections: "5", synchronous_commit: "on", fsync: "off" });
  });

  it("is ready once migrated", async () => {
    expect((await api.get("/health/ready")).status).toBe(200);
  });

  it("holds the Flash Sale Attack: 50 concurrent claims on 5 stock -> exactly 5 win", async () => {
    await api.createCoupon("pg-flash", 5);
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => api.claim(`b${i}`, "pg-flash")));
    expect(results.filter((r) => r.status === 201).length).toBe(5);
    expect(results.filter((r) => r.body.code === "SOLD_OUT").length).toBe(45);
    const coupon = (await api.getCoupon("pg-flash")).body;
    expect(coupon.remaining_amount).toBe(0);
    expect(coupon.claimed_by.length).toBe(5);
  });

  it("holds the Double Dip Attack: 10 concurrent claims by one user -> exactly 1 wins", async () => {
    await api.createCoupon("pg-dip", 3);
    const results = await Promise.all(Array.from({ length: 10 }, () => api.claim("greedy", "pg-dip")));
    expect(results.filter((r) => r.status === 201).length).toBe(1);
    expect(results.filter((r) => r.body.code === "ALREADY_CLAIMED").length).toBe(9);
    expect((await api.getCoupon("pg-dip")).body).toEqual({
      name: "pg-dip",
      amount: 3,
      remaining_amount: 2,
      claimed_by: ["greedy"],
    });
  });

  it("answers the other contract statuses the same way", async () => {
    expect((await api.createCoupon("pg-dip", 1)).body.code).toBe("COUPON_EXISTS");
    expect((await api.claim("u", "pg-nothing")).body.code).toBe("COUPON_NOT_FOUND");
    expect((await api.getCoupon("pg-nothing")).status).toBe(404);
  });
});
