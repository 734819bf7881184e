// One step of the search: an operation taken as the next to take effect on its coupon, in a state. The
// rules (rules.ts) say what it must have answered; time decides among them (a claim's answer depends
// on when it is decided), so the step picks the earliest instant within the operation's interval, and
// never before the last time-dependent decision, at which its answer holds.
import { comparable, replays, type Span, spanOf } from "./answers";
import { type Operation, unknownEffect } from "./history";
import { boundaries, type CouponState, type Decision, decide, dependsOnTime, fingerprint, type Kept } from "./rules";

export interface StepContext {
  coupon: string;
  toleranceMs: number;
  /** Whether `key` is sent again later in the history (only then is its decision worth keeping in the state). */
  live(key: string): boolean;
  /** Set to explain misfits: formats an instant for a sentence. */
  explain?: (ms: number) => string;
}

const KEYED = new Set(["create", "claim", "release"]);
const overlap = (a: Span, b: Span): Span => ({ from: Math.max(a.from, b.from), to: Math.min(a.to, b.to) });

/**
 * The states `op` can leave `s` in when it takes effect next, or why it cannot (a misfit). An operation
 * with an unknown effect yields only the states it changes: leaving it without effect is the same as
 * taking it last, which the search does once nothing else is left.
 */
export function step(s: CouponState, op: Operation, ctx: StepContext): CouponState[] | string {
  const { request, answer } = op;
  const unknown = unknownEffect(op);
  const why = (reason: string) => (ctx.explain ? reason : "");
  if (request.kind === "read" && unknown) return [];
  if (!unknown && op.key && (answer?.body as { code?: string })?.code === "IDEMPOTENCY_KEY_IN_USE") {
    const inUse = spanOf({ status: 409, code: "IDEMPOTENCY_KEY_IN_USE", keep: false }, answer as never);
    return typeof inUse === "string" ? why(inUse) : [s]; // nothing applied; checker.ts checks it overlapped its key
  }
  const key = op.key && KEYED.has(request.kind) ? op.key : undefined;
  const pin = fingerprint(ctx.coupon, request);
  const kept = key === undefined ? undefined : s.keys[key];
  if (kept) {
    if (unknown) return [];
    if (kept.fingerprint !== pin) {
      const reused = spanOf({ status: 422, code: "IDEMPOTENCY_KEY_REUSED", keep: false }, answer as never);
      return typeof reused === "string" ? why(`key held by another request: ${reused}`) : [s];
    }
    const replayed = replays(kept, answer as never, ctx.toleranceMs);
    return replayed === true ? [s] : why(replayed);
  }

  const window: Span = {
    from: op.invokedAt - ctx.toleranceMs,
    to: unknown ? Number.POSITIVE_INFINITY : (op.completedAt as number) + ctx.toleranceMs,
  };
  const timed = dependsOnTime(s, request);
  const open = timed ? overlap(window, { from: s.clock, to: Number.POSITIVE_INFINITY }) : window;
  // Between two bounds of the sale the rules give one answer; each stretch is tried from its earliest instant.
  const cuts = timed ? boundaries(s) : [];
  const stretches = [Number.NEGATIVE_INFINITY, ...cuts].map((from, i) => ({
    from,
    to: cuts[i] ?? Number.POSITIVE_INFINITY,
  }));
  const after = (decision: Decision, at: number): CouponState => {
    const next = { ...(decision.after ?? s), clock: timed ? at : s.clock };
    if (key === undefined || !decision.expected.keep || !ctx.live(key)) return next;
    const keep: Kept = unknown
      ? { fingerprint: pin, expected: decision.expected, after: op.invokedAt }
      : { fingerprint: pin, answer: comparable(answer as never) };
    return { ...next, keys: { ...s.keys, [key]: keep } };
  };
  const states: CouponState[] = [];
  const reasons: string[] = [];
  for (const stretch of stretches) {
    const possible = overlap(open, stretch);
    if (possible.from >= possible.to) continue;
    const decision = decide(ctx.coupon, s, request, possible.from);
    if (unknown) {
      const keeps = key !== undefined && decision.expected.keep && ctx.live(key);
      if (decision.after || keeps) states.push(after(decision, possible.from));
      continue;
    }
    const span = spanOf(decision.expected, answer as never);
    if (typeof span === "string") {
      reasons.push(why(timed ? `${span} ${during(possible, ctx)}` : span));
      continue;
    }
    if (decision.expected.instant) {
      // The database's instant of its decision must fall within the request's interval, where this
      // answer holds. It does not place the operation in the order: a batch's effects are seen from its
      // commit, and an answer from memory in between tells the state before it.
      const decided = overlap(window, stretch);
      const named = overlap(span, decided);
      if (named.from < named.to) return [after(decision, possible.from)];
      reasons.push(why(`its ${decision.expected.instant} is not ${during(decided, ctx)}`));
      continue;
    }
    const fits = overlap(possible, span);
    if (fits.from < fits.to) return [after(decision, fits.from)]; // the earliest instant leaves the most open
    reasons.push(why(`its answer holds ${during(span, ctx)}, not ${during(possible, ctx)}`));
  }
  if (unknown || reasons.length) return unknown ? states : reasons.join("; ");
  const [by, last] = [window.to, s.clock].map((ms) => ctx.explain?.(ms));
  return why(`answered by ${by} (with the tolerance), before the time-dependent decision made before it at ${last}`);
}

/** "from +12.3 to +14.1 ms": a span in a sentence. */
function during(span: Span, ctx: StepContext): string {
  const at = (ms: number) => (Number.isFinite(ms) ? (ctx.explain?.(ms) ?? String(ms)) : "");
  if (!Number.isFinite(span.to)) return `(decided from ${at(span.from)} on)`;
  if (!Number.isFinite(span.from)) return `(decided before ${at(span.to)})`;
  return `(decided from ${at(span.from)} to ${at(span.to)})`;
}
