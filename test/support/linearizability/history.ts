// A history of the service as clients saw it: each operation's request, when it was sent and when its
// answer came back, and the answer. What the checker (checker.ts) judges, and what a failing test
// writes to a file for scripts/check-history.ts to replay.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** What an operation asks, per kind (instants as the API takes them: RFC 3339 strings). */
export type Request =
  | { kind: "create"; amount: number; starts_at?: string; ends_at?: string }
  | { kind: "claim" | "release"; user: string }
  | { kind: "patch"; active?: boolean; starts_at?: string | null; ends_at?: string | null }
  | { kind: "read" };

/** An answer: status, parsed body, and the headers a replay must repeat or the rules set. */
export interface Answer {
  status: number;
  body: unknown;
  /** Lowercase names; only those in ANSWER_HEADERS, when present. */
  headers: Record<string, string>;
}

export const ANSWER_HEADERS = ["content-type", "retry-after", "location", "idempotent-replayed"] as const;

export interface Operation {
  id: number;
  coupon: string;
  request: Request;
  /** The Idempotency-Key sent, if any. */
  key?: string;
  /** Epoch ms on the database's clock (as estimated by the recorder), sub-millisecond. */
  invokedAt: number;
  /** Null when no answer came (a cut connection, a client timeout). */
  completedAt: number | null;
  /** Null when none came, or (in a prefix) it came after the prefix's end. */
  answer: Answer | null;
  /** Which replica it was sent to, for the reader of a report. */
  replica?: number;
}

export interface History {
  /** How far the recorder's clock may be from the database's, in ms (both ways). */
  toleranceMs: number;
  operations: Operation[];
  /** What produced it (test, seed), for the reader. */
  note?: string;
}

/** True when the operation's effect is unknown: no answer, or a 503 (it may or may not have been applied). */
export const unknownEffect = (op: Operation): boolean => op.answer === null || op.answer.status === 503;

/** The operations of each coupon, in invocation order: operations on different coupons are independent. */
export function byCoupon(history: History): Map<string, Operation[]> {
  const coupons = new Map<string, Operation[]>();
  for (const op of [...history.operations].sort((a, b) => a.invokedAt - b.invokedAt)) {
    const ops = coupons.get(op.coupon) ?? [];
    ops.push(op);
    coupons.set(op.coupon, ops);
  }
  return coupons;
}

/** The history as it stood at `at`: later operations dropped, answers after it not known (effect unknown). */
export function prefixAt(operations: readonly Operation[], at: number): Operation[] {
  return operations
    .filter((op) => op.invokedAt <= at)
    .map((op) => (op.completedAt !== null && op.completedAt <= at ? op : { ...op, answer: null }));
}

/** Writes `history` as JSON under the OS temp dir (coupon-histories/), returning the file's path. */
export function writeHistory(history: History, label: string): string {
  const folder = join(tmpdir(), "coupon-histories");
  mkdirSync(folder, { recursive: true });
  const file = join(folder, `${label.replace(/[^\w.-]+/g, "_")}-${Date.now()}.json`);
  writeFileSync(file, JSON.stringify(history, null, 1));
  return file;
}

export function readHistory(file: string): History {
  return JSON.parse(readFileSync(file, "utf8")) as History;
}
