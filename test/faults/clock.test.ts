// A host clock that steps (NTP, an operator, a VM resumed) moves Date.now(), not time. Deadlines and
// the database's clock as a replica carries it forward run on the monotonic clock, so a step changes
// no answer: a sale opens on time by the database's clock whatever this host's clock says.
import { afterAll, beforeAll, describe, expect, it, setSystemTime } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { createLogger } from "../../src/log";
import type { ChangeFeed } from "../../src/store/changes";
import { buildApp, listen } from "../support/app";
import { databaseForSuite } from "../support/database";
import { type ApiResponse, type Client, client } from "../support/http";
import { metric } from "../support/replicas";

const database = databaseForSuite();
const MARGIN_MS = 300;
let feed: ChangeFeed;
let api: Client;
let stop: () => Promise<void>;

beforeAll(async () => {
  feed = await database.handle.listen({ log: createLogger("silent"), leaseMs: 200 });
  const server = listen(buildApp(database.handle.db, { feed, scheduleMarginMs: MARGIN_MS }).app);
  api = client(server.baseUrl);
  stop = server.stop;
  for (const deadline = performance.now() + 5000; !feed.live && performance.now() < deadline; ) await Bun.sleep(10);
});
afterAll(async () => {
  setSystemTime();
  await stop();
  await feed.close();
});

/** The real time, read off the monotonic clock: what Date.now() would say had the host clock not stepped. */
const realNow = () => performance.timeOrigin + performance.now();

/** Claims by fresh users until one is answered from memory; returns that answer (5 s at most). */
async function fromMemory(coupon: string): Promise<ApiResponse> {
  for (let i = 0, end = performance.now() + 5000; performance.now() < end; i++) {
    const before = await metric(api, "coupon_claims_from_memory_total");
    const res = await api.claim(`early-${i}`, coupon);
    if ((await metric(api, "coupon_claims_from_memory_total")) > before) return res;
    await Bun.sleep(10);
  }
  throw new Error("no claim was answered from memory");
}

describe("a host clock stepped while the service runs", () => {
  it.each([
    ["back 10 s", -10_000],
    ["forward 10 s", 10_000],
  ])(
    "opens a sale at its starts_at by the database's clock, the host clock stepped %s",
    async (label, stepMs) => {
      const coupon = `stepped-${stepMs}`;
      const opensAt = realNow() + 1500;
      const created = await api.post("/api/coupons", {
        name: coupon,
        amount: 3,
        starts_at: new Date(opensAt).toISOString(),
      });
      expect(created.status).toBe(201);
      expect((await fromMemory(coupon)).body.code).toBe("SALE_NOT_STARTED");
      setSystemTime(new Date(realNow() + stepMs));
      try {
        if (stepMs > 0) {
          // The host clock says the sale has opened; the database's clock says it has not.
          expect((await api.claim("too-early", coupon)).body.code).toBe("SALE_NOT_STARTED");
        }
        await Bun.sleep(Math.max(0, opensAt + MARGIN_MS + 200 - realNow()));
        const res = await api.claim(`on-time-${label}`, coupon);
        expect({ status: res.status, code: res.body.code }).toEqual({ status: 201, code: undefined });
      } finally {
        setSystemTime();
      }
    },
    15_000,
  );
});

describe("the service's source", () => {
  it("reads the wall clock only as the wall clock (the offset shown, the embedded database's clock)", () => {
    const src = join(import.meta.dir, "../../src");
    const files = readdirSync(src, { recursive: true, encoding: "utf8" }).filter((file) => file.endsWith(".ts"));
    const reads = files.flatMap((file) =>
      readFileSync(join(src, file), "utf8")
        .split("\n")
        .filter((line) => /Date\.now\(\)/.test(line) && !/^\s*(\/\/|\*)/.test(line))
        .map((line) => `${file}: ${line.trim()}`),
    );
    expect(reads.length).toBeGreaterThan(0);
    for (const read of reads) expect(read).toMatch(/wallClock \?\? \(\(\) => Date\.now\(\)\)/);
  });
});
