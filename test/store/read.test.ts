// Reading a coupon: the exact bytes of today's answer for small and big coupons, one snapshot of stock
// and claimers even when the claimers are paged (while claims are made, released and re-claimed), and a
// bound on the paged reads that run at once.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { sql } from "drizzle-orm";
import { AppError } from "../../src/domain/errors";
import { jsonAnswer } from "../../src/http/json-stream";
import { decideClaims } from "../../src/store/claims";
import { openPglite } from "../../src/store/client";
import { createCoupon } from "../../src/store/coupons";
import { type Database, queryRows } from "../../src/store/database";
import { type ClaimerPages, type CouponRead, readCoupon } from "../../src/store/read";
import { createReadSlots, type ReadSlots } from "../../src/store/read-slots";
import { buildApp } from "../support/app";
import { fenceOf } from "../support/coupons";
import { drivers } from "../support/drivers";
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

/** Creates `name` with `amount` in stock and inserts claims by `users` in that order, keeping the ledger (stock and seq). */
async function seed(db: Database, name: string, amount: number, users: string[]): Promise<void> {
  await createCoupon(db, name, amount);
  await db.execute(sql`
    insert into claims (user_id, coupon_name, seq)
    select u, ${name}, ord from unnest(${sql.param(users)}::text[]) with ordinality as t(u, ord) order by ord`);
  await db.execute(
    sql`update coupons set remaining_amount = amount - ${users.length}, last_seq = ${users.length} where name = ${name}`,
  );
}

const soon = () => performance.now() + 10_000;
// No bound on paged reads at once: cases about the bound make their own.
const unbounded = createReadSlots(Number.POSITIVE_INFINITY);

/** Every claimer of a read, whether it came whole or in pages. */
async function allClaimers(read: CouponRead): Promise<string[]> {
  if (Array.isArray(read.claimed_by)) return read.claimed_by;
  const all: string[] = [];
  for await (const page of read.claimed_by) all.push(...page);
  return all;
}

/** Whether a slot is free now ("free", handed back at once) or the code a reader is refused with. */
const slotNow = (slots: ReadSlots) =>
  slots.acquire(performance.now() + 1).then(
    (release) => {
      release();
      return "free";
    },
    (error: AppError) => error.code,
  );

/** The answer's bytes as a client receives them. */
async function bytesOf(answer: unknown): Promise<Buffer> {
  const response = answer instanceof Response ? answer : Response.json(answer);
  return Buffer.from(await response.arrayBuffer());
}

const expectedBytes = (name: string, amount: number, users: string[]) =>
  Buffer.from(JSON.stringify({ name, amount, remaining_amount: amount - users.length, claimed_by: users }));

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
    const read = await readCoupon(db, "small", soon(), { pageSize: 100, slots: unbounded });
    expect(read.claimed_by).toEqual(users);
    expect(await bytesOf(await jsonAnswer(read))).toEqual(expectedBytes("small", 150, users));
  });

  it.each([101, 2500, 2537])(
    "streams %i claimers in pages of 100 as exactly JSON.stringify of the whole coupon",
    async (count) => {
      const users = userIds(count);
      const name = `paged-${count}`;
      await seed(db, name, count + 7, users);
      const read = await readCoupon(db, name, soon(), { pageSize: 100, slots: unbounded });
      expect(Array.isArray(read.claimed_by)).toBe(false);
      expect(await bytesOf(await jsonAnswer(read))).toEqual(expectedBytes(name, count + 7, users));
    },
  );

  it("lists claimers in claim order, whatever order their ids sort in", async () => {
    const users = Array.from({ length: 250 }, (_, i) => `z${String(250 - i).padStart(3, "0")}`);
    await seed(db, "ordered", 250, users);
    expect(await allClaimers(await readCoupon(db, "ordered", soon(), { pageSize: 100, slots: unbounded }))).toEqual(
      users,
    );
    expect(await allClaimers(await readCoupon(db, "ordered", soon(), { pageSize: 1000, slots: unbounded }))).toEqual(
      users,
    );
  });

  it("keeps a paged read to its snapshot: claims committed while it streams are not in it", async () => {
    const users = userIds(1037); // a last page with room for the claims made while it streams
    await seed(db, "moving", 2000, users);
    const read = await readCoupon(db, "moving", soon(), { pageSize: 100, slots: unbounded });
    const pages = (read.claimed_by as ClaimerPages)[Symbol.asyncIterator]();
    const first = await pages.next();
    // The read is paused between pages; claims on the same coupon go through meanwhile.
    const claims = await Promise.all(Array.from({ length: 30 }, (_, i) => api.claim(`late-${i}`, "moving")));
    expect(claims.map((claim) => claim.status)).toEqual(Array(30).fill(201));
    const rest: string[] = [];
    for (let page = await pages.next(); !page.done; page = await pages.next()) rest.push(...page.value);
    expect([...(first.value as string[]), ...rest]).toEqual(users);
    expect(read.remaining_amount).toBe(2000 - users.length);
    const after = await readCoupon(db, "moving", soon(), { pageSize: 100, slots: unbounded });
    expect(after.remaining_amount).toBe(2000 - 1067);
    const late = Array.from({ length: 30 }, (_, i) => `late-${i}`);
    expect((await allClaimers(after)).slice(1037).sort()).toEqual(late.sort());
  });

  it("fails a paged read whose claimers stop matching its stock, rather than answer them", async () => {
    await seed(db, "tampered", 500, userIds(500));
    const read = await readCoupon(db, "tampered", soon(), { pageSize: 100, slots: unbounded });
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
    const late = readCoupon(db, "big", performance.now() + 200, options).catch((error) => error);
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
    const start = performance.now();
    const second = readCoupon(db, "big", start + 1000, { pageSize: 100, slots });
    await Bun.sleep(800);
    await allClaimers(first);
    const read = await second;
    await Bun.sleep(Math.max(0, start + 1100 - performance.now())); // past the deadline it was given on arrival
    expect(await allClaimers(read)).toEqual(userIds(300));
  });

  it("frees a slot once, however often it is released", async () => {
    const slots = createReadSlots(1);
    const release = await slots.acquire(soon());
    release();
    release();
    const again = await slots.acquire(soon());
    expect(await slots.acquire(performance.now() + 50).catch((error) => error.code)).toBe("SERVICE_UNAVAILABLE");
    again();
  });

  it("frees a read's slot when its client goes away mid-read", async () => {
    const slots = createReadSlots(1);
    const read = await readCoupon(db, "big", soon(), { pageSize: 100, slots });
    const iterator = (read.claimed_by as ClaimerPages)[Symbol.asyncIterator]();
    expect((await iterator.next()).value).toEqual(userIds(300).slice(0, 100));
    expect(await slotNow(slots)).toBe("SERVICE_UNAVAILABLE"); // the read holds the only slot
    await iterator.return?.();
    expect(await slotNow(slots)).toBe("free");
  });

  it("ends a read whose client stops pulling at its deadline, freeing its slot", async () => {
    const slots = createReadSlots(1);
    const read = await readCoupon(db, "big", performance.now() + 300, { pageSize: 100, slots });
    const pages = read.claimed_by as ClaimerPages;
    const iterator = pages[Symbol.asyncIterator]();
    await iterator.next();
    await new Promise((resolve) => pages.signal.addEventListener("abort", resolve, { once: true }));
    expect((pages.signal.reason as AppError).code).toBe("SERVICE_UNAVAILABLE");
    (await slots.acquire(performance.now() + 50))(); // free again, although the read never finished
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

/** A coupon's stock and holders in claim order, read in one statement: the state at one instant. */
async function holdersNow(db: Database, name: string): Promise<{ remaining: number; holders: string[] }> {
  const [row] = await queryRows<{ remaining: number; holders: string[] | string }>(
    db,
    sql`select c.remaining_amount as remaining,
      (select coalesce(json_agg(user_id order by id), '[]'::json) from claims where coupon_name = c.name) as holders
    from coupons c where c.name = ${name}`,
  );
  const holders = row?.holders ?? [];
  return { remaining: row?.remaining ?? -1, holders: typeof holders === "string" ? JSON.parse(holders) : holders };
}

/**
 * One writer releasing and re-claiming on `name`, one mixed batch at a time, recording the state after
 * each: every state the coupon was ever in, in order. `next()` resolves after the next batch (at once
 * when the writer is done), so a reader can make sure a change happens between two of its pages.
 */
async function churn(db: Database, name: string, batches: number, floor: number) {
  const states = [await holdersNow(db, name)];
  let waiting: (() => void)[] = [];
  let done = false;
  let seed = 4242;
  const random = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  const run = async () => {
    const released: string[] = [];
    for (let batch = 0; batch < batches; batch++) {
      const holders = [...(states.at(-1) as { holders: string[] }).holders];
      const users: string[] = [];
      const releases: boolean[] = [];
      for (let i = 1 + random(6); i > 0; i--) {
        const kind = random(5);
        // Releases anywhere in the claim order (pages already read and pages not yet read), re-claims
        // of released users (a new id, after the snapshot), newcomers, and a release of nothing.
        if (kind <= 1 && holders.length > floor) {
          users.push(holders.splice(random(holders.length), 1)[0] as string);
          releases.push(true);
        } else if (kind === 2 && released.length > 0) {
          users.push(released.splice(random(released.length), 1)[0] as string);
          releases.push(false);
        } else if (kind === 3) {
          users.push(`new-${batch}-${i}`);
          releases.push(false);
        } else {
          users.push(`never-${i}`);
          releases.push(true);
        }
      }
      const fence = releases.includes(true) ? await fenceOf(db, name) : undefined;
      const requests = users.map((user, i) => (releases[i] ? { user, release: true, fence } : { user }));
      const decisions = await decideClaims(db, name, requests);
      for (const [i, d] of decisions.entries()) if (d.outcome === "released") released.push(users[i] as string);
      states.push(await holdersNow(db, name));
      for (const wake of waiting) wake();
      waiting = [];
    }
    done = true;
    for (const wake of waiting) wake();
  };
  return {
    states,
    finished: run(),
    get done() {
      return done;
    },
    next: () => (done ? Promise.resolve() : new Promise<void>((resolve) => waiting.push(resolve))),
  };
}

describe.each(drivers)("readCoupon on %s while claims are released and re-claimed", (_driver, open) => {
  let db: Database;
  let close: () => Promise<void>;
  beforeAll(async () => {
    ({ db, close } = await open());
  });
  afterAll(() => close());

  it("answers every paged read as the holders of one instant, between its head's start and end", async () => {
    const amount = 300;
    await seed(db, "churned", amount, userIds(220));
    const writer = await churn(db, "churned", 80, 150);
    type Read = { from: number; to: number; end: number; claimers?: string[]; remaining?: number; error?: unknown };
    const reads: Read[] = [];
    /** Reads until the writer is done; `stepped` waits for a change between every two pages. */
    const reader = async (stepped: boolean) => {
      while (!writer.done) {
        const read: Read = { from: writer.states.length - 1, to: 0, end: 0 };
        reads.push(read);
        try {
          const answer = await readCoupon(db, "churned", soon(), { pageSize: 40, slots: unbounded });
          // The head may have seen a batch committed but not yet recorded: one more state is possible.
          read.to = writer.states.length;
          read.remaining = answer.remaining_amount;
          const pages = (answer.claimed_by as ClaimerPages)[Symbol.asyncIterator]();
          const claimers: string[] = [];
          for (let page = await pages.next(); !page.done; page = await pages.next()) {
            claimers.push(...page.value);
            await (stepped ? writer.next() : Bun.sleep(Math.random() * 3));
          }
          read.claimers = claimers;
        } catch (error) {
          read.error = error;
        }
        read.end = writer.states.length - 1;
      }
    };
    await Promise.all([reader(true), reader(true), reader(false), reader(false), writer.finished]);
    const { states } = writer;
    expect(states).toHaveLength(81);
    let changedDuring = 0;
    for (const read of reads) {
      if (read.error !== undefined) {
        // The only documented failure of a read is running out of time (503), never a count mismatch.
        expect(String(read.error)).not.toContain("claimers read, the stock says");
        expect((read.error as AppError).code).toBe("SERVICE_UNAVAILABLE");
        continue;
      }
      const claimers = read.claimers as string[];
      expect(claimers).toHaveLength(amount - (read.remaining as number));
      const candidates = states.slice(read.from, Math.min(read.to, states.length - 1) + 1);
      const match = candidates.find((s) => s.remaining === read.remaining && Bun.deepEquals(s.holders, claimers));
      // On a mismatch, show the diff against the state at the read's start.
      expect(match ?? { remaining: read.remaining, holders: claimers }).toEqual(
        match ?? (candidates[0] as (typeof states)[0]),
      );
      if (!Bun.deepEquals(claimers, states[read.end]?.holders)) changedDuring++;
    }
    // The writer really changed the coupon while reads were in their pages.
    expect(reads.filter((read) => read.claimers).length).toBeGreaterThan(4);
    expect(changedDuring).toBeGreaterThan(0);
    const last = states.at(-1) as (typeof states)[0];
    expect(await allClaimers(await readCoupon(db, "churned", soon(), { pageSize: 40, slots: unbounded }))).toEqual(
      last.holders,
    );
  }, 60_000);
});
