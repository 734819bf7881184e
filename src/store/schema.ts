// The tables: coupons and their claims (the contract operators query directly, so table and column
// names are part of it), the released claims, the decisions kept under Idempotency-Keys, and the
// fences of changes about to be made.
import { sql } from "drizzle-orm";
import { bigint, boolean, check, index, integer, pgTable, text, timestamp, unique } from "drizzle-orm/pg-core";

export const coupons = pgTable(
  "coupons",
  {
    name: text("name").primaryKey(),
    amount: integer("amount").notNull(),
    remainingAmount: integer("remaining_amount").notNull(),
    createdAt: timestamp("created_at", { withTimezone: true }).notNull().defaultNow(),
    // The sale's schedule, by the database's clock: claims win only in [starts_at, ends_at). Null = no bound.
    startsAt: timestamp("starts_at", { withTimezone: true }),
    endsAt: timestamp("ends_at", { withTimezone: true }),
    // False while an operator has paused the sale.
    active: boolean("active").notNull().default(true),
    // The seq of the coupon's latest winning claim: the next one gets last_seq + 1. Bumped by the batch
    // functions in the UPDATE that takes the stock, under the coupon's lock, so it is never reused.
    lastSeq: integer("last_seq").notNull().default(0),
  },
  (table) => [
    // The database itself refuses an oversell, whatever the application does.
    check("coupons_remaining_amount_check", sql`${table.remainingAmount} BETWEEN 0 AND ${table.amount}`),
    // A sale closes after it opens (a null bound passes).
    check("coupons_schedule_check", sql`${table.endsAt} > ${table.startsAt}`),
  ],
);

export const claims = pgTable(
  "claims",
  {
    // Claim order: a batch commits many claims with one now(), so created_at alone cannot order them.
    // Per coupon, ids are given in the same order as seqs (both under the coupon's lock).
    id: bigint("id", { mode: "number" }).primaryKey().generatedAlwaysAsIdentity(),
    userId: text("user_id").notNull(),
    couponName: text("coupon_name")
      .notNull()
      .references(() => coupons.name),
    createdAt: timestamp("created_at", { withTimezone: true }).notNull().defaultNow(),
    // The claim's place among the coupon's winning claims, 1 for the first, never reused (a re-claim
    // after a release gets the next). Given under the coupon's lock in the order ids are, so per
    // coupon seq order is id order; no index: nothing looks a claim up by it.
    seq: integer("seq").notNull(),
  },
  (table) => [
    // One claim per user per coupon, enforced by the schema.
    unique("claims_user_id_coupon_name_key").on(table.userId, table.couponName),
    // Serves claimed_by (claims of one coupon in claim order) and the foreign key.
    index("claims_coupon_name_id_idx").on(table.couponName, table.id),
  ],
);

// Released claims, kept for operators, and so a coupon's claimers can be read as of one snapshot while
// claims are released (store/read.ts): a release is inserted under the coupon's lock, so per coupon
// its id grows in commit order. `claims` holds the current holders only.
export const claimReleases = pgTable(
  "claim_releases",
  {
    id: bigint("id", { mode: "number" }).primaryKey().generatedAlwaysAsIdentity(),
    // The released row's claims.id: its place in claim order.
    claimId: bigint("claim_id", { mode: "number" }).notNull(),
    userId: text("user_id").notNull(),
    couponName: text("coupon_name")
      .notNull()
      .references(() => coupons.name),
    claimedAt: timestamp("claimed_at", { withTimezone: true }).notNull(),
    releasedAt: timestamp("released_at", { withTimezone: true }).notNull(),
    // The released claim's seq: with the claims held, a coupon's seqs are 1..last_seq, each once.
    seq: integer("seq").notNull(),
  },
  (table) => [
    index("claim_releases_coupon_name_id_idx").on(table.couponName, table.id),
    // A user's latest release on a coupon (store/claim-read.ts), one probe however many releases it has.
    index("claim_releases_coupon_name_user_id_id_idx").on(table.couponName, table.userId, table.id),
  ],
);

// The answers given under an Idempotency-Key (store/keys.ts), written in the transaction that
// decided them. Stored as the decision the answer is rendered from (the request itself is pinned by
// its fingerprint), so a replay renders the same status, body and headers from any replica.
export const idempotencyKeys = pgTable(
  "idempotency_keys",
  {
    key: text("key").primaryKey(),
    // SHA-256 of the route and the request's fields: the same key with another request is refused.
    fingerprint: text("fingerprint").notNull(),
    // Null only inside the transaction deciding it; a committed row always holds its decision.
    outcome: text("outcome"),
    decidedAt: timestamp("decided_at", { withTimezone: true }),
    remaining: integer("remaining"),
    // The claim's seq when the decision is a claim's "created", so a replay answers the same one.
    seq: integer("seq"),
    createdAt: timestamp("created_at", { withTimezone: true }).notNull(),
    // A row past this instant is as good as absent; the cleanup deletes it later (IDEMPOTENCY_TTL).
    expiresAt: timestamp("expires_at", { withTimezone: true }).notNull(),
  },
  // BRIN: expires_at grows with insertion order (one TTL), so block ranges summarise it well, and a
  // key costs no btree insert on the claim path; the cleanup's range scan is all that reads it.
  (table) => [index("idempotency_keys_expires_at_idx").using("brin", table.expiresAt)],
);

// A change about to be made to a coupon (a release, a PATCH), announced before it is made, so no
// replica learns the coupon's state for answers from memory while it may still change under it
// (engine/answers.ts, store/fences.ts). The change deletes its fence in the transaction that makes it;
// a fence past expires_at was given up on, and the first reader to find it breaks it.
export const couponFences = pgTable(
  "coupon_fences",
  {
    token: text("token").primaryKey(),
    couponName: text("coupon_name")
      .notNull()
      .references(() => coupons.name),
    expiresAt: timestamp("expires_at", { withTimezone: true }).notNull(),
  },
  (table) => [index("coupon_fences_coupon_name_idx").on(table.couponName)],
);
