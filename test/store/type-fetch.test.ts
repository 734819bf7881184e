// A connection that ends while postgres.js fetches its array types (the first statement on every new
// connection) must fail only its own queries. postgres.js 3.4.9 dropped that fetch's promise: its
// failure was an unhandled rejection, which ends the process, and the service exited 1 when a SIGTERM
// closed a connection still starting (upstream #1192, #1205, #1223; patched).
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import postgres from "postgres";
import { databaseForSuite } from "../support/database";
import { startInspectingProxy } from "../support/proxy";

const database = databaseForSuite();

/** A proxy that cuts a connection the moment its client asks for the array types. */
async function cuttingProxy(targetUrl: string) {
  let cuts = 0;
  const proxy = await startInspectingProxy(targetUrl, () => (chunk) => {
    if (!chunk.includes("typarray")) return true;
    cuts++;
    return false;
  });
  return { ...proxy, cuts: () => cuts };
}

describe("postgres.js fetching array types", () => {
  let proxy: Awaited<ReturnType<typeof cuttingProxy>>;
  const unhandled: unknown[] = [];
  const record = (reason: unknown) => unhandled.push(reason);
  beforeAll(async () => {
    proxy = await cuttingProxy(database.url);
    process.on("unhandledRejection", record);
  });
  afterAll(async () => {
    process.off("unhandledRejection", record);
    await proxy.close();
  });

  it("fails the query of a connection cut mid-fetch, and nothing else", async () => {
    const client = postgres(proxy.url, { max: 1, connect_timeout: 2, onnotice: () => {} });
    try {
      const outcome = await client`select ${1}::int as n`.then(
        () => "answered",
        () => "failed",
      );
      expect(outcome).toBe("failed");
      expect(proxy.cuts()).toBeGreaterThan(0);
    } finally {
      await client.end({ timeout: 0 });
    }
    await Bun.sleep(100); // an unhandled rejection is reported after the microtasks that could handle it
    expect(unhandled).toEqual([]);
  });
});
