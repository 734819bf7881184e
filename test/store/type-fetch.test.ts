// A connection that ends while postgres.js fetches its array types (the first statement on every new
// connection) must fail only its own queries. postgres.js 3.4.9 dropped that fetch's promise: its
// failure was an unhandled rejection, which ends the process, and the service exited 1 when a SIGTERM
// closed a connection still starting (upstream #1192, #1205, #1223; patched).
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import net from "node:net";
import postgres from "postgres";
import { databaseForSuite } from "../support/database";

const database = databaseForSuite();

/** A proxy that cuts a connection the moment its client asks for the array types. */
async function cuttingProxy(targetUrl: string) {
  const target = new URL(targetUrl);
  let cuts = 0;
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port || 5432), target.hostname);
    client.on("data", (chunk: Buffer) => {
      if (chunk.includes("typarray")) {
        cuts++;
        client.destroy();
        upstream.destroy();
        return;
      }
      upstream.write(chunk);
    });
    upstream.on("data", (chunk) => client.write(chunk));
    for (const [one, other] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      one.on("close", () => other.destroy());
      one.on("error", () => other.destroy());
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = new URL(targetUrl);
  url.hostname = "127.0.0.1";
  url.port = String((server.address() as net.AddressInfo).port);
  return {
    url: url.href,
    cuts: () => cuts,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
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
