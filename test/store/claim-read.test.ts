// Reading one user's claim on one coupon: the claim held (its instant and seq), the latest release, or
// nothing; an unknown coupon refused; one statement of index probes whatever the coupon's size.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { drizzle } from "drizzle-orm/postgres-js";
import postgres from "postgres";
import type { AppError } from "../../src/domain/errors";
import { readClaim } from "../../src/store/claim-read";
import { decideBatch } from "../../src/store/claims";
import { createCoupon } from "../../src/store/coupons";
import type { Database } from "../../src/store/database";
import * as schema from "../../src/store/schema";
import { claimsBy, releaseOf } from "../support/coupons";
import { createTestDatabase, type TestDatabase } from "../support/database";
import { drivers } from "../support/drivers";

const soon = () => performance.now() + 10_000;

/** The instant `user`'s request in a batch of one on `coupon` was decided at. */
async function decidedAt(db: Database, coupon: string, user: string, release = false): Promise<Date> {
  const request = release ? await releaseOf(db, coupon, user) : { user };
  const [decision] = (await decideBatch(db, coupon, [request])).decisions;
  if (!decision?.decidedAt) throw new Error(`${user} on ${coupon}: ${decision?.outcome}, not decided`);
  return decision.decidedAt;
}

describe.each(drivers)("readClaim on %s", (_driver, open) => {
  let db: Database;
  let close: () => Promise<void>;
  beforeAll(async () => {
    ({ db, close } = await open());
    await createCoupon(db, "SALE", 10);
  });
  afterAll(() => close());

  it("answers a held claim with its claimed_at and its seq", async () => {
    await decideBatch(db, "SALE", claimsBy(["first", "second"]));
    const at = await decidedAt(db, "SALE", "held");
    expect(await readClaim(db, "SALE", "held", soon())).toEqual({ status: "held", claimedAt: at, seq: 3 });
    expect(await readClaim(db, "SALE", "first", soon())).toMatchObject({ status: "held", seq: 1 });
  });

  it("answers a released claim with the instant of the user's latest release", async () => {
    await decidedAt(db, "SALE", "leaver");
    await decidedAt(db, "SALE", "leaver", true);
    await decidedAt(db, "SALE", "leaver");
    const latest = await decidedAt(db, "SALE", "leaver", true);
    expect(await readClaim(db, "SALE", "leaver", soon())).toEqual({ status: "released", releasedAt: latest });
  });

  it("answers a claim made again after a release as held, with its new seq", async () => {
    await decidedAt(db, "SALE", "back");
    await decidedAt(db, "SALE", "back", true);
    const at = await decidedAt(db, "SALE", "back");
    const read = await readClaim(db, "SALE", "back", soon());
    expect(read).toEqual({ status: "held", claimedAt: at, seq: 7 });
  });

  it("answers none for a user who never claimed the coupon, even one who claimed another", async () => {
    await createCoupon(db, "OTHER", 1);
    await decidedAt(db, "OTHER", "elsewhere");
    expect(await readClaim(db, "SALE", "elsewhere", soon())).toEqual({ status: "none" });
    expect(await readClaim(db, "SALE", "nobody", soon())).toEqual({ status: "none" });
  });

  it("refuses an unknown coupon with COUPON_NOT_FOUND", async () => {
    const refused: AppError = await readClaim(db, "NO_SUCH_SALE", "held", soon()).catch((error) => error);
    expect([refused.code, refused.message]).toEqual(["COUPON_NOT_FOUND", 'No coupon named "NO_SUCH_SALE".']);
  });
});

describe("readClaim on a coupon with many claims and releases", () => {
  let database: TestDatabase;
  beforeAll(async () => {
    database = await createTestDatabase();
    // 20,000 claims and 5,000 released ones on one coupon, a few on another, then analysed.
    await createCoupon(database.handle.db, "BIG", 30_000);
    await createCoupon(database.handle.db, "SMALL", 10);
    await database.sql`insert into claims (user_id, coupon_name, seq)
      select 'u' || g, 'BIG', g from generate_series(1, 20000) g order by g`;
    await database.sql`insert into claim_releases (claim_id, user_id, coupon_name, claimed_at, released_at, seq)
      select 100000 + g, 'r' || g, 'BIG', now(), now(), 20000 + g from generate_series(1, 5000) g order by g`;
    await database.sql`update coupons set remaining_amount = 10000, last_seq = 25000 where name = 'BIG'`;
    await decideBatch(database.handle.db, "SMALL", claimsBy(["u1"]));
    await database.sql`analyze`;
  });
  afterAll(() => database.drop());

  it("is one statement of index probes: no scan of the coupon's claims or releases, whoever is asked", async () => {
    // auto_explain on a session of its own reports the plan of each statement a read sends.
    const plans: string[] = [];
    const session = postgres(database.url, { max: 1, onnotice: (notice) => void plans.push(notice.message ?? "") });
    try {
      await session`load 'auto_explain'`;
      await session`set auto_explain.log_min_duration = 0`;
      await session`set client_min_messages = log`;
      plans.length = 0;
      const db = drizzle(session, { schema }) as unknown as Database;
      const reads = [];
      for (const user of ["u12345", "r2500", "nobody"]) reads.push(await readClaim(db, "BIG", user, soon()));
      expect(reads.map((read) => read.status)).toEqual(["held", "released", "none"]);
      expect(reads[0]).toMatchObject({ seq: 12345 });
      expect(plans).toHaveLength(3);
      const all = plans.join("\n");
      expect(all).not.toMatch(/Seq Scan on claim/);
      expect(all).toContain("claims_user_id_coupon_name_key");
      expect(all).toContain("claim_releases_coupon_name_user_id_id_idx");
    } finally {
      await session.end();
    }
  });

  it("fails with SERVICE_UNAVAILABLE once its deadline passes while the database does not answer", async () => {
    const blocker = await database.sql.reserve();
    try {
      await blocker`begin`;
      await blocker`lock table claims in access exclusive mode`;
      const started = performance.now();
      const refused: AppError = await readClaim(database.handle.db, "SMALL", "u1", started + 200).catch((e) => e);
      expect(refused.code).toBe("SERVICE_UNAVAILABLE");
      expect(performance.now() - started).toBeLessThan(2000);
    } finally {
      await blocker`rollback`;
      blocker.release();
    }
    expect(await readClaim(database.handle.db, "SMALL", "u1", soon())).toMatchObject({ status: "held", seq: 1 });
  });
});
