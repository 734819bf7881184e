// Reading one coupon with its claimers: one snapshot, paged and streamed when it is big.
import { sql } from "drizzle-orm";
import { type CouponDetails, couponSummary, type SaleColumns } from "../domain/coupon";
import { couponNotFound, fail } from "../domain/errors";
import { type Database, queryRows } from "./database";
import { withDeadline } from "./deadline";
import type { ReadSlots } from "./read-slots";

/** Claimers of a big coupon in claim order, one page at a time; `signal` aborts at the read's deadline. */
export interface ClaimerPages extends AsyncIterable<string[]> {
  readonly signal: AbortSignal;
}

/** A read coupon: small ones carry their claimers, big ones a pull-based sequence of pages of them. */
export type CouponRead = Omit<CouponDetails, "claimed_by"> & { claimed_by: string[] | ClaimerPages };

/** A read whose deadline came before it was answered whole. */
export const readTooSlow = { code: "SERVICE_UNAVAILABLE", detail: "The coupon could not be read in time." } as const;

export interface ReadOptions {
  /** COUPON_READ_PAGE_SIZE: claimers per page, and the most a coupon may have to be answered from one statement. */
  pageSize: number;
  /** COUPON_READ_STREAMS_MAX: the bound on paged reads at once. */
  slots: ReadSlots;
}

interface HeadRow extends SaleColumns {
  name: string;
  amount: number;
  remaining_amount: number;
  last_id: string | null;
  last_release_id: string | null;
  claimed_by: string[] | string | null;
}

/**
 * Reads a coupon as one snapshot: stock and claimers agree. Claimers come in claims.id order, which per
 * coupon is their seq order (drizzle/0006_seq.sql gives both in one order under the coupon's lock),
 * so claimed_by lists them by seq without reading it. Up to `pageSize` claimers come from one
 * statement; more are paged by id after taking a slot, so no read holds a big coupon's claimers in
 * memory. `deadline` (performance.now() ms) bounds the wait for the database and for a slot; from its slot, a
 * paged read has as long again to stream.
 */
export async function readCoupon(
  db: Database,
  name: string,
  deadline: number,
  { pageSize, slots }: ReadOptions,
): Promise<CouponRead> {
  const budget = deadline - performance.now();
  const left = () => Math.max(0, deadline - performance.now());
  // The claimers are aggregated only when the ledger says they fit; the limit keeps that bound anyway.
  const [head] = await withDeadline(
    queryRows<HeadRow>(
      db,
      sql`select c.name, c.amount, c.remaining_amount, c.starts_at, c.ends_at, c.active,
        (select max(id)::text from claims where coupon_name = c.name) as last_id,
        (select max(id)::text from claim_releases where coupon_name = c.name) as last_release_id,
        case when c.amount - c.remaining_amount <= ${pageSize} then (
          select coalesce(json_agg(s.user_id order by s.id), '[]'::json) from (
            select user_id, id from claims where coupon_name = c.name order by id limit ${pageSize + 1}) s)
        end as claimed_by
      from coupons c where c.name = ${name}`,
    ),
    left(),
  );
  if (!head) throw couponNotFound(name);
  const { amount, remaining_amount, last_id, last_release_id } = head;
  // The drivers differ: json may come back parsed or as text.
  const claimers: string[] | null = typeof head.claimed_by === "string" ? JSON.parse(head.claimed_by) : head.claimed_by;
  const coupon = couponSummary(head);
  if (claimers && claimers.length <= pageSize) return { ...coupon, claimed_by: claimers };
  const release = await slots.acquire(deadline);
  // From its slot, a read gets the whole budget again to stream: one that waited for the slot still
  // finishes, and no slow client holds a slot longer than a request may wait.
  const streamDeadline = performance.now() + budget;
  const abort = new AbortController();
  const timer = setTimeout(() => {
    release();
    abort.abort(fail(readTooSlow));
  }, budget);
  const snapshot = { lastId: last_id ?? "0", lastReleaseId: last_release_id ?? "0" };
  const pages = claimerPages(db, name, snapshot, amount - remaining_amount, pageSize, streamDeadline, abort.signal);
  async function* guarded() {
    try {
      yield* pages;
    } finally {
      clearTimeout(timer);
      release();
    }
  }
  return { ...coupon, claimed_by: { signal: abort.signal, [Symbol.asyncIterator]: guarded } };
}

/** What the head statement saw: the last claim id, and the last release id, of the coupon. */
interface Snapshot {
  lastId: string;
  lastReleaseId: string;
}

/**
 * The claims of `name` as of the head statement's snapshot, in id order, read in pages after it.
 * Claims and releases are written under the coupon's advisory lock and committed before it is
 * released, so per coupon both ids grow in commit order: a claim the snapshot held has an id up to
 * `lastId` and is either still in `claims` or was released since, which puts it in `claim_releases`
 * with an id above `lastReleaseId` (a re-claim has a new id, above `lastId`). If that ever stops being
 * true, the count check fails the read rather than answer claimers that disagree with the stock.
 */
async function* claimerPages(
  db: Database,
  name: string,
  { lastId, lastReleaseId }: Snapshot,
  expected: number,
  pageSize: number,
  deadline: number,
  ended: AbortSignal,
): AsyncGenerator<string[]> {
  let after = "0";
  let count = 0;
  while (after !== lastId) {
    const left = deadline - performance.now();
    // The read's timer may fire a fraction of a millisecond before `deadline` by this clock: it ends it too.
    if (left <= 0 || ended.aborted) throw fail(readTooSlow);
    const rows = await withDeadline(
      queryRows<{ id: string; user_id: string }>(
        db,
        sql`select s.id::text as id, s.user_id from (
            select id, user_id from claims
              where coupon_name = ${name} and id > ${after}::bigint and id <= ${lastId}::bigint
            union all
            select claim_id, user_id from claim_releases
              where coupon_name = ${name} and id > ${lastReleaseId}::bigint
                and claim_id > ${after}::bigint and claim_id <= ${lastId}::bigint
          ) s order by s.id limit ${pageSize}`,
      ),
      left,
    );
    if (rows.length === 0) break;
    count += rows.length;
    after = (rows[rows.length - 1] as { id: string }).id;
    yield rows.map((row) => row.user_id);
  }
  if (count !== expected) throw new Error(`coupon ${name}: ${count} claimers read, the stock says ${expected}`);
}
