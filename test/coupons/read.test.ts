// Reading a coupon: the exact bytes of today's answer for small and big coupons, one snapshot of stock
// and claimers even when the claimers are paged, and a bound on the paged reads that run at once.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { sql } from "drizzle-orm";
import { createCoupon } from "../../src/coupons/coupons";
import { type ClaimerPages, type CouponRead, readCoupon } from "../../src/coupons/read";
import { createReadSlots } from "../../src/coupons/read-slots";
import { type Database, openPglite } from "../../src/db/client";
import { AppError } from "../../src/errors";
import { jsonAnswer } from "../../src/http/json-stream";
import { buildApp } from "../support/app";
import { createTestDatabase } from "../support/database";
import { type Client, client } from "../support/http";

// User ids a hand-written JSON encoder gets wrong; each is a valid id for the API.
const UNUSUAL = [
  'say "hi"',
  "back\\slash\\",
  "emoji 😀🎉",
  "line\u2028para\u2029",
  "</script>",
  "ünïcödé €",
  "a,b]}",
  '{"nested":[1]}',
  "\\u0041",
  "'single'",
];

/** `count` user ids in claim order: the unusual ones spread among plain ones that sort backwards. */
function userIds(count: number): string[] {
  return Array.from({ length: count }, (_, i) =>
    i % 97 < UNUSUAL.length ? `${UNUSUAL[i % 97]} ${i}` : `user-${String(count - i).padStart(7, "0")}`,
  );
}

/** Creates `name` with `amount` in stock and inserts claims by `users` in that order, keeping the ledger. */
async function seed(db: Database, name: string, amount: number, users: string[]): Promise<void> {
  await createCoupon(db, name, amount);
  await db.execute(sql`
    insert into claims (user_id, coupon_name)
    select u, ${name} from unnest(${sql.param(users)}::text[]) with ordinality as t(u, ord) order by ord`);
  await db.execute(sql`update coupons set remaining_amount = amount - ${users.length} where name = ${name}`);
}

const soon = () => Date.now() + 10_000;

/** Every claimer of a read, whether it came whole or in pages. */
async function allClaimers(read: CouponRead): Promise<string[]> {
  if (Array.isArray(read.claimed_by)) return read.claimed_by;
  const all: string[] = [];
  for await (const page of read.claimed_by) all.push(...page);
  return all;
}

/** The answer's bytes as a client receives them. */
async function bytesOf(answer: unknown): Promise<Buffer> {
  const response = answer instanceof Response ? answer : Response.json(answer);
  return Buffer.from(await response.arrayBuffer());
}

const expectedBytes = (name: string, amount: number, users: string[]) =>
  Buffer.from(JSON.stringify({ name, amount, remaining_amount: amount - users.length, claimed_by: users }));

const drivers: [string, () => Promise<{ db: Database; close: () => Promise<void> }>][] = [
  [
    "PostgreSQL",
    async () => {
      const database = await createTestDatabase();
      return { db: database.handle.db, close: () => database.drop() };
    },
  ],
  [
    "PGlite",
    async () => {
      const handle = await openPglite("memory://");
      await handle.migrate();
      return { db: handle.db, close: () => handle.close() };
    },
  ],
];

describe.each(drivers)("readCoupon on %s", (_driver, open) => {
  let db: Database;
  let close: () => Promise<void>;
  let app: ReturnType<typeof buildApp>["app"];
  let api: Client;
  beforeAll(async () => {
    ({ db, close } = await open());
    app = buildApp(db).app;
    api = client(app);
  });
  afterAll(() => close());

  it("answers a coupon with up to a page of claimers whole, from one statement", async () => {
    const users = userIds(100);
    await seed(db, "small", 150, users);
    const read = await readCoupon(db, "small", soon(), { pageSize: 100 });
    expect(read.claimed_by).toEqual(users);
    expect(await bytesOf(await jsonAnswer(read))).toEqual(expectedBytes("small", 150, users));
  });

  it.each([101, 2500, 2537])(
    "streams %i claimers in pages of 100 as exactly JSON.stringify of the whole coupon",
    async (count) => {
      const users = userIds(count);
      const name = `paged-${count}`;
      await seed(db, name, count + 7, users);
      const read = await readCoupon(db, name, soon(), { pageSize: 100 });
      expect(Array.isArray(read.claimed_by)).toBe(false);
      expect(await bytesOf(await jsonAnswer(read))).toEqual(expectedBytes(name, count + 7, users));
    },
  );

  it("lists claimers in claim order, whatever order their ids sort in", async () => {
    const users = Array.from({ length: 250 }, (_, i) => `z${String(250 - i).padStart(3, "0")}`);
    await seed(db, "ordered", 250, users);
    expect(await allClaimers(await readCoupon(db, "ordered", soon(), { pageSize: 100 }))).toEqual(users);
    expect(await allClaimers(await readCoupon(db, "ordered", soon(), { pageSize: 1000 }))).toEqual(users);
  });

  it("keeps a paged read to its snapshot: claims committed while it streams are not in it", async () => {
    const users = userIds(1037); // a last page with room for the claims made while it streams
    await seed(db, "moving", 2000, users);
    const read = await readCoupon(db, "moving", soon(), { pageSize: 100 });
    const pages = (read.claimed_by as ClaimerPages)[Symbol.asyncIterator]();
    const first = await pages.next();
    // The read is paused between pages; claims on the same coupon go through meanwhile.
    const claims = await Promise.all(Array.from({ length: 30 }, (_, i) => api.claim(`late-${i}`, "moving")));
    expect(claims.map((claim) => claim.status)).toEqual(Array(30).fill(201));
    const rest: string[] = [];
    for (let page = await pages.next(); !page.done; page = await pages.next()) rest.push(...page.value);
    expect([...(first.value as string[]), ...rest]).toEqual(users);
    expect(read.remaining_amount).toBe(2000 - users.length);
    const after = await readCoupon(db, "moving", soon(), { pageSize: 100 });
    expect(after.remaining_amount).toBe(2000 - 1067);
    const late = Array.from({ length: 30 }, (_, i) => `late-${i}`);
    expect((await allClaimers(after)).slice(1037).sort()).toEqual(late.sort());
  });

  it("fails a paged read whose claimers stop matching its stock, rather than answer them", async () => {
    await seed(db, "tampered", 500, userIds(500));
    const read = await readCoupon(db, "tampered", soon(), { pageSize: 100 });
    const pages = (read.claimed_by as ClaimerPages)[Symbol.asyncIterator]();
    await pages.next();
    // Deleting a claim behind the service's back breaks the invariant the paged read relies on.
    await db.execute(sql`delete from claims where id = (select max(id) from claims where coupon_name = 'tampered')`);
    const drained = (async () => {
      for (let page = await pages.next(); !page.done; page = await pages.next());
    })();
    await expect(drained).rejects.toThrow(/499 claimers read, the stock says 500/);
  });

  it("answers a coupon over a default page through GET as today's bytes and content type", async () => {
    const users = userIds(5_000);
    await seed(db, "huge", 6_000, users);
    await seed(db, "tiny", 3, ["only"]);
    for (const [name, amount, claimers] of [
      ["huge", 6_000, users],
      ["tiny", 3, ["only"]],
    ] as const) {
      const response = await app.handle(new Request(`http://localhost/api/coupons/${name}`));
      expect(response.status).toBe(200);
      expect(response.headers.get("content-type")).toBe("application/json;charset=utf-8");
      expect(response.headers.get("x-request-id")).toBeTruthy();
      expect(Buffer.from(await response.arrayBuffer())).toEqual(expectedBytes(name, amount, [...claimers]));
    }
  });
});

describe("paged reads at once", () => {
  let db: Database;
  let close: () => Promise<void>;
  beforeAll(async () => {
    const handle = await openPglite("memory://");
    await handle.migrate();
    ({ db, close } = handle);
    await seed(db, "big", 300, userIds(300));
    await seed(db, "little", 10, userIds(5));
  });
  afterAll(() => close());

  // "big" has ids 1..300: its pages cross the ids' digit boundaries, so an id compared as text would show.
  it("holds the reader over the cap until a slot frees, and answers 503 past its deadline", async () => {
    const slots = createReadSlots(2);
    const options = { pageSize: 100, slots };
    const [a, b] = await Promise.all([readCoupon(db, "big", soon(), options), readCoupon(db, "big", soon(), options)]);
    let third: CouponRead | undefined;
    const waiting = readCoupon(db, "big", soon(), options).then((read) => {
      third = read;
    });
    const late = readCoupon(db, "big", Date.now() + 200, options).catch((error) => error);
    // A small read needs no slot.
    expect((await readCoupon(db, "little", soon(), options)).claimed_by).toHaveLength(5);
    const refused = await late;
    expect(refused).toBeInstanceOf(AppError);
    expect({ code: refused.code, retryAfter: refused.retryAfter }).toEqual({
      code: "SERVICE_UNAVAILABLE",
      retryAfter: 1,
    });
    expect(third).toBeUndefined();
    expect(await allClaimers(a as CouponRead)).toHaveLength(300); // a read drained frees its slot
    await waiting;
    expect(await allClaimers(third as unknown as CouponRead)).toEqual(userIds(300));
    await allClaimers(b as CouponRead);
  });

  it("gives a read that waited for its slot its whole budget again to stream", async () => {
    const slots = createReadSlots(1);
    const first = await readCoupon(db, "big", soon(), { pageSize: 100, slots });
    const start = Date.now();
    const second = readCoupon(db, "big", start + 1000, { pageSize: 100, slots });
    await Bun.sleep(800);
    await allClaimers(first);
    const read = await second;
    await Bun.sleep(Math.max(0, start + 1100 - Date.now())); // past the deadline it was given on arrival
    expect(await allClaimers(read)).toEqual(userIds(300));
  });

  it("frees a slot once, however often it is released", async () => {
    const slots = createReadSlots(1);
    const release = await slots.acquire(soon());
    release();
    release();
    const again = await slots.acquire(soon());
    expect(await slots.acquire(Date.now() + 50).catch((error) => error.code)).toBe("SERVICE_UNAVAILABLE");
    again();
  });

  it("frees a read's slot when its client goes away mid-read", async () => {
    const slots = createReadSlots(1);
    const read = await readCoupon(db, "big", soon(), { pageSize: 100, slots });
    const iterator = (read.claimed_by as ClaimerPages)[Symbol.asyncIterator]();
    await iterator.next();
    await iterator.return?.();
    (await slots.acquire(Date.now() + 50))();
  });

  it("ends a read whose client stops pulling at its deadline, freeing its slot", async () => {
    const slots = createReadSlots(1);
    const read = await readCoupon(db, "big", Date.now() + 300, { pageSize: 100, slots });
    const pages = read.claimed_by as ClaimerPages;
    const iterator = pages[Symbol.asyncIterator]();
    await iterator.next();
    await new Promise((resolve) => pages.signal.addEventListener("abort", resolve, { once: true }));
    expect((pages.signal.reason as AppError).code).toBe("SERVICE_UNAVAILABLE");
    (await slots.acquire(Date.now() + 50))(); // free again, although the read never finished
    await expect(iterator.next()).rejects.toThrow(AppError);
  });

  it("answers GET with 503 SERVICE_UNAVAILABLE and Retry-After while every slot stays busy", async () => {
    await seed(db, "crowded", 5_000, userIds(3_000));
    const slots = createReadSlots(4);
    const api = client(buildApp(db, { timeoutMs: 300, readSlots: slots }).app);
    const held = await Promise.all(Array.from({ length: 4 }, () => slots.acquire(soon())));
    const refused = await api.getCoupon("crowded");
    expect([refused.status, refused.body.code, refused.headers.get("retry-after")]).toEqual([
      503,
      "SERVICE_UNAVAILABLE",
      "1",
    ]);
    expect((await api.getCoupon("little")).status).toBe(200);
    for (const release of held) release();
    const served = await api.getCoupon("crowded");
    expect(served.status).toBe(200);
    expect(served.body.claimed_by).toEqual(userIds(3_000));
  });
});
