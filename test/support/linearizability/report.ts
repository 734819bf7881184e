// A coupon's verdict in words, for a developer: where the longest order that explains the answers
// stops, the coupon's state there, and why none of the operations that could come next fits.
import { type CheckOptions, type CouponVerdict, checkCoupon, checkHistory, shortestFailingPrefix } from "./checker";
import { type History, type Operation, unknownEffect, writeHistory } from "./history";
import { step } from "./model";
import type { CouponState } from "./rules";

/** How many operations of the order found are shown before the point where it stops. */
const SHOWN = 12;

/** "+1234.567 ms": an instant relative to `base` (the history's first request). */
const relative = (base: number) => (ms: number) => `+${(ms - base).toFixed(3)} ms`;

/** One operation in a line: what it asked, where, when, and what it got. */
export function describe(op: Operation, base: number): string {
  const at = relative(base);
  const { kind, ...fields } = op.request;
  const asked = Object.keys(fields).length ? ` ${JSON.stringify(fields)}` : "";
  const key = op.key ? ` key ${op.key}` : "";
  const via = op.replica === undefined ? "" : ` via ${op.replica}`;
  const answered = op.completedAt === null ? "no answer" : `answered ${at(op.completedAt)}`;
  const when = `sent ${at(op.invokedAt)}, ${op.answer === null && op.completedAt !== null ? "answered later" : answered}`;
  const answer = op.answer;
  const replay = answer?.headers["idempotent-replayed"] ? " (replayed)" : "";
  const retry = answer?.headers["retry-after"] ? ` Retry-After ${answer.headers["retry-after"]}` : "";
  const body = answer && answer.status >= 400 ? (answer.body as { code?: string }).code : JSON.stringify(answer?.body);
  return `#${op.id} ${kind}${asked}${key}${via}, ${when}: ${answer ? `${answer.status} ${body ?? ""}${retry}${replay}` : "-"}`;
}

function describeState(s: CouponState, base: number): string {
  if (!s.exists) return "no such coupon";
  const at = relative(base);
  const sale = [
    s.active ? "active" : "paused",
    s.startsAt !== null ? `starts_at ${at(s.startsAt)}` : "",
    s.endsAt !== null ? `ends_at ${at(s.endsAt)}` : "",
    Number.isFinite(s.clock) ? `last time-dependent decision at ${at(s.clock)}` : "",
  ].filter(Boolean);
  return `amount ${s.amount}, remaining ${s.amount - s.holders.length}, holders [${s.holders.join(", ")}], ${sale.join(", ")}`;
}

/** The verdict of one coupon in lines; `base` is the instant times are shown from. */
export function explain(verdict: CouponVerdict, toleranceMs: number, base: number): string[] {
  const { coupon, operations } = verdict;
  const head = `coupon ${JSON.stringify(coupon)}: ${operations.length} operations`;
  if (verdict.linearizable) return [`${head}, linearizable (${verdict.nodes} states searched)`];
  if (verdict.undecided) return [`${head}: undecided, no order found within ${verdict.nodes} states`];
  if (verdict.lonelyInUse) {
    return [
      `${head}, not linearizable`,
      `  IDEMPOTENCY_KEY_IN_USE with no other request of its key in flight:`,
      `  ${describe(verdict.lonelyInUse, base)}`,
    ];
  }
  const lines = [
    `${head}, not linearizable (${verdict.nodes} states searched)`,
    ...(verdict.decisive
      ? [
          `  the first answer no order explains (every answer before it is explained):`,
          `    ${describe(verdict.decisive, base)}`,
        ]
      : []),
    ...stuck(verdict, toleranceMs, base),
  ];
  // That order may owe its length to 503s taking effect late; without any, it often stops at the culprit.
  if (!verdict.deepest?.order.some(unknownEffect)) return lines;
  const answered = checkCoupon(
    coupon,
    operations.filter((op) => !unknownEffect(op)),
    toleranceMs,
  );
  if (answered.linearizable || answered.undecided) return lines;
  return [...lines, `  with no 503 (nor unanswered request) taking effect:`, ...stuck(answered, toleranceMs, base)];
}

/** Where the longest order found stops, and why none of the operations that could come next fits. */
function stuck(verdict: CouponVerdict, toleranceMs: number, base: number): string[] {
  const { order, state } = verdict.deepest as NonNullable<CouponVerdict["deepest"]>;
  const placed = new Set(order);
  const left = verdict.operations.filter((op) => !placed.has(op));
  const before = Math.min(
    ...left.map((op) => (unknownEffect(op) ? Number.POSITIVE_INFINITY : (op.completedAt as number))),
  );
  const next = left.filter((op) => op.invokedAt <= before && !unknownEffect(op));
  const ctx = { coupon: verdict.coupon, toleranceMs, explain: relative(base) };
  return [
    `  the longest order in which every answer fits places ${order.length} of them; its last ${Math.min(SHOWN, order.length)}:`,
    ...order.slice(-SHOWN).map((op) => `    ${describe(op, base)}`),
    `  the coupon then: ${describeState(state, base)}`,
    `  none of the ${next.length} operations that could come next fits:`,
    ...next.map((op) => {
      const why = step(state, op, { ...ctx, live: (key) => left.some((o) => o !== op && o.key === key) });
      return `    ${describe(op, base)}\n      -> ${typeof why === "string" ? why : "fits, but leads nowhere further"}`;
    }),
  ];
}

export interface HistoryVerdict {
  linearizable: boolean;
  coupons: CouponVerdict[];
  /** Where the history was written, when it was not linearizable and `label` was given. */
  file?: string;
  /** The verdict in words: the shortest failing stretch of the first failing coupon explained, the others listed. */
  report: string;
}

/**
 * Checks every coupon of `history`. When one is not linearizable (or undecided) and `label` is given,
 * writes the history to a file that `bun scripts/check-history.ts <file>` replays.
 */
export function judge(history: History, options: CheckOptions & { label?: string } = {}): HistoryVerdict {
  const coupons = checkHistory(history, options);
  const failing = coupons.filter((c) => !c.linearizable);
  const base = Math.min(...history.operations.map((op) => op.invokedAt));
  const searched = `${history.operations.length} operations on ${coupons.length} coupons`;
  if (failing.length === 0) return { linearizable: true, coupons, report: `linearizable: ${searched}` };
  const file = options.label === undefined ? undefined : writeHistory(history, options.label);
  // The failing coupon with the shortest failing prefix, explained; the others named.
  const shortest = failing
    .filter((c) => !c.undecided)
    .map((c) => shortestFailingPrefix(c, history.toleranceMs, options))
    .sort((a, b) => a.operations.length - b.operations.length)[0];
  const lines = [
    `not linearizable: ${failing.map((c) => JSON.stringify(c.coupon)).join(", ")} of ${searched}` +
      (history.note ? ` (${history.note})` : ""),
    ...(file ? [`history written to ${file}; replay with: bun scripts/check-history.ts ${file}`] : []),
    ...(shortest ? [`the shortest failing stretch, from the first request of the history:`] : []),
    ...(shortest ? explain(shortest, history.toleranceMs, base) : []),
    ...failing.filter((c) => c.undecided).flatMap((c) => explain(c, history.toleranceMs, base)),
  ];
  return { linearizable: false, coupons, file, report: lines.join("\n") };
}
