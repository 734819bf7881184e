// Fences: how a change that alters what replicas answer from memory (a release gives stock back, a
// PATCH pauses, resumes or reschedules) is made so that no replica answers the old state once the
// change is visible. First the change is announced (coupon_fence: a fence row, and a notification
// every replica hears and forgets the coupon by); then the writer waits out the lease
// (changes.ts): from then on every replica has heard the fence, or its lease has run out and it
// answers nothing from memory; while the fence stands no replica can learn the coupon again
// (coupon_snapshot). Only then is the change made, and it takes the fence down in its own
// transaction (drizzle/0005_fences.sql). What this adds to a release's or a PATCH's latency is one
// round trip and the lease (MEMORY_LEASE_MS).
import { sql } from "drizzle-orm";
import { type Database, queryRows } from "./database";

// A fence outlives its writer's deadline by this much, so a change sent just before the deadline
// still finds it; one whose writer gave up is broken by the next reader after that.
const FENCE_TTL_SLACK_MS = 1000;

/**
 * How long to wait after a fence committed: the lease, stretched for two hosts' monotonic clocks
 * running at rates that differ (by far less than 1%), and a millisecond for the timer's granularity.
 */
export const leaseWaitMs = (leaseMs: number) => (leaseMs === 0 ? 0 : leaseMs * 1.01 + 1);

/**
 * Announces a change of `couponName` that its writer will make before `deadline` (performance.now()
 * ms); resolves to the fence's token, or undefined when there is no such coupon (nothing fenced).
 */
export async function raiseFence(db: Database, couponName: string, deadline: number): Promise<string | undefined> {
  const token = crypto.randomUUID();
  const ttlMs = Math.max(0, deadline - performance.now()) + FENCE_TTL_SLACK_MS;
  const [row] = await queryRows<{ fenced: boolean }>(
    db,
    sql`select coupon_fence(${couponName}, ${token}, ${ttlMs}::float8) as fenced`,
  );
  return row?.fenced ? token : undefined;
}

/** Takes down a fence whose change will not be made (its writer gave up before making it). */
export async function dropFence(db: Database, token: string): Promise<void> {
  await db.execute(sql`delete from coupon_fences where token = ${token}`);
}

/**
 * Takes down the fence `token` inside the transaction `tx` that makes its change: true when it still
 * stood, false when it had expired (a reader may have learnt the state this change replaces: the
 * change must not be made).
 */
export async function lowerFence(tx: Database, token: string): Promise<boolean> {
  const rows = await queryRows<{ token: string }>(
    tx,
    sql`delete from coupon_fences where token = ${token} and expires_at > clock_timestamp() returning token`,
  );
  return rows.length === 1;
}
