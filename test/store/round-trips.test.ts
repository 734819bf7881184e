// Every statement of the claim path goes to PostgreSQL in one round trip. postgres.js, with prepare:
// false, first sent a statement with parameters as Parse, Describe, Flush and waited for the parameter
// types before it sent Bind and Execute: a second round trip per claim batch, each a wait on a busy
// event loop (patches/postgres@3.4.9.patch now sends all at once when no parameter needs a type from the
// server, and the store sends arrays as literals: textArray). A proxy reads the client's messages and
// counts the Flush that only that wait sends.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { sql } from "drizzle-orm";
import fc from "fast-check";
import { loadConfig } from "../../src/config";
import { fingerprint } from "../../src/http/idempotency";
import { claimSnapshot, decideBatch } from "../../src/store/claims";
import { type DatabaseHandle, openPostgres } from "../../src/store/client";
import { createCoupon } from "../../src/store/coupons";
import { queryRows, textArray } from "../../src/store/database";
import { releaseOf } from "../support/coupons";
import { databaseForSuite } from "../support/database";
import { startInspectingProxy } from "../support/proxy";

const database = databaseForSuite();

/** A proxy in front of PostgreSQL that counts, per message type, what clients send (after start-up). */
async function countingProxy(targetUrl: string) {
  const counts = new Map<string, number>();
  const proxy = await startInspectingProxy(targetUrl, () => {
    // Per connection: a message may span chunks, so what is left of one is kept.
    let pending = Buffer.alloc(0);
    let started = false; // the start-up message has a length but no type byte
    return (chunk) => {
      pending = Buffer.concat([pending, chunk]);
      for (;;) {
        const header = started ? 5 : 4;
        if (pending.length < header) break;
        const length = started ? pending.readUInt32BE(1) + 1 : pending.readUInt32BE(0);
        if (pending.length < length) break;
        if (started) {
          const type = String.fromCharCode(pending[0] as number);
          counts.set(type, (counts.get(type) ?? 0) + 1);
        }
        started = true;
        pending = pending.subarray(length);
      }
      return true;
    };
  });
  return {
    ...proxy,
    /** Flush messages sent since the last call: each one a statement that waited for its types. */
    flushes() {
      const flushes = counts.get("H") ?? 0;
      counts.clear();
      return flushes;
    },
  };
}

describe("the claim path's statements", () => {
  let proxy: Awaited<ReturnType<typeof countingProxy>>;
  let handle: DatabaseHandle;
  beforeAll(async () => {
    proxy = await countingProxy(database.url);
    handle = openPostgres(proxy.url, loadConfig({ DATABASE_URL: proxy.url }));
    await handle.timeouts(); // reads pg_settings with an array parameter: a Flush of its own
    await createCoupon(database.handle.db, "one-trip", 100);
    proxy.flushes();
  });
  afterAll(async () => {
    await handle.close();
    await proxy.close();
  });

  it("go out in one round trip each: claims, keyed claims, a release, the snapshot", async () => {
    const key = (n: number) => ({
      key: `k-${n}`,
      fingerprint: fingerprint("POST /api/coupons/claim", [n]),
      ttlMs: 60_000,
    });
    const plain = await decideBatch(handle.db, "one-trip", [{ user: "a" }, { user: 'b"\\,{}' }]);
    const keyed = await decideBatch(handle.db, "one-trip", [
      { user: "c", idempotency: key(1) },
      { user: "d", idempotency: key(2) },
    ]);
    const release = await decideBatch(handle.db, "one-trip", [await releaseOf(handle.db, "one-trip", "a")]);
    const snapshot = await claimSnapshot(handle.db, "one-trip", 10);
    expect([plain, keyed, release].flatMap((batch) => batch.decisions.map((d) => d.outcome))).toEqual([
      "created",
      "created",
      "created",
      "created",
      "released",
    ]);
    expect(snapshot).toMatchObject({ fenced: false, remaining: 97 });
    expect(proxy.flushes()).toBe(0);
  });

  it("would be seen waiting: a JS array parameter still asks for its types first", async () => {
    await queryRows(handle.db, sql`select ${sql.param(["x", "y"])}::text[] as a`);
    expect(proxy.flushes()).toBe(1);
  });
});

describe("textArray", () => {
  // Whatever a user id, key or fingerprint holds (PostgreSQL text cannot hold NUL), PostgreSQL reads the
  // literal back as the same array: quotes, backslashes, commas, braces, spaces, "NULL", the empty string.
  it("round-trips any array of strings and nulls through PostgreSQL's text[] input", async () => {
    const text = fc.string({ unit: "binary" }).map((value) => value.replaceAll("\u0000", ""));
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.oneof(text, fc.constant(null), fc.constantFrom("NULL", "", '"', "\\", "{,}"))),
        async (values) => {
          // As JSON: postgres.js reads a NULL element of a text[] as the string "NULL".
          const [row] = await database.sql<
            { a: (string | null)[] }[]
          >`select array_to_json(${textArray(values)}::text[]) as a`;
          expect(row?.a).toEqual(values);
        },
      ),
      { numRuns: 300 },
    );
  });
});
