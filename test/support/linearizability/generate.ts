// Random histories that are linearizable by construction: concurrent clients send operations, each
// takes effect at a random instant between its request and its answer, and the sequential rules
// (rules.ts) decide it there, in the order of those instants. Some answers are 503s (or never come),
// applied or not. The checker must accept every one of them.
import { detailOf, rejections } from "../../../src/domain/outcomes";
import { toProblem } from "../../../src/http/problems";
import type { Answer, History, Operation, Request } from "./history";
import { type CouponState, type Decision, decide, fingerprint, initialState } from "./rules";

/** A seeded pseudo-random generator (mulberry32): the same seed, the same numbers. */
export function seeded(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    /** An integer in [0, n). */
    int: (n: number) => Math.floor(next() * n),
    pick: <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)] as T,
    chance: (p: number) => next() < p,
  };
}

const T0 = Date.UTC(2026, 11, 1, 9); // any instant: the clock of a generated history
const iso = (ms: number) => new Date(ms).toISOString();

/** The answer the rules' decision renders as, at instant `at`, as the service would send it. */
export function render(decision: Decision, at: number, coupon: string, requestId: string): Answer {
  const e = decision.expected;
  if (e.code) {
    const rejection = Object.values(rejections).find((r) => r.code === e.code);
    const detail = rejection ? detailOf(rejection, coupon) : e.code;
    const headers: Record<string, string> = { "content-type": "application/problem+json" };
    if (e.opensAt !== undefined) headers["retry-after"] = String(Math.max(1, Math.ceil((e.opensAt - at) / 1000)));
    return { status: e.status, body: toProblem(e.code, detail, `/api/coupons/${coupon}`, requestId), headers };
  }
  const body = { ...e.body, ...(e.instant ? { [e.instant]: iso(Math.floor(at)) } : {}) };
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (e.location) headers.location = e.location;
  return { status: e.status, body, headers };
}

const unavailable = (requestId: string): Answer => ({
  status: 503,
  body: toProblem("SERVICE_UNAVAILABLE", detailOf(rejections.unconfirmed, ""), undefined, requestId),
  headers: { "content-type": "application/problem+json", "retry-after": "1" },
});

/** A random request on a coupon whose sale runs over [T0, T0 + spanMs). */
function randomRequest(r: ReturnType<typeof seeded>, spanMs: number): Request {
  const at = () => iso(T0 + r.int(spanMs));
  const user = `u${r.int(5)}`;
  const roll = r.next();
  if (roll < 0.5) return { kind: "claim", user };
  if (roll < 0.68) return { kind: "release", user };
  if (roll < 0.8) return { kind: "read" };
  if (roll < 0.83) return { kind: "create", amount: 1 + r.int(3) };
  if (r.chance(0.5)) return { kind: "patch", active: r.chance(0.5) };
  return r.chance(0.5) ? { kind: "patch", starts_at: r.chance(0.2) ? null : at() } : { kind: "patch", ends_at: at() };
}

/** A linearizable history of `clients` concurrent clients on `coupons` coupons, from `seed`. */
export function linearizableHistory(seed: number, { clients = 4, operations = 60, coupons = 2 } = {}): History {
  const r = seeded(seed);
  const spanMs = operations * 2;
  const names = Array.from({ length: coupons }, (_, i) => `g${i}`);
  // Each coupon created first, scheduled over the run's span half of the time.
  const plans: (Omit<Operation, "answer"> & { at: number; outcome: "answered" | "lost" | "applied" | "dropped" })[] =
    names.map((coupon, id) => {
      const sale = r.chance(0.5)
        ? { starts_at: iso(T0 + r.int(spanMs / 2)), ends_at: iso(T0 + spanMs / 2 + r.int(spanMs)) }
        : {};
      const request: Request = { kind: "create", amount: 1 + r.int(3), ...sale };
      return {
        id,
        coupon,
        request,
        invokedAt: T0 - 10 + id,
        completedAt: T0 - 9.5 + id,
        at: T0 - 9.7 + id,
        outcome: "answered",
      };
    });
  const keys: { key: string; coupon: string; request: Request }[] = [];
  const clocks = Array.from({ length: clients }, () => T0 + r.next());
  for (let id = coupons; id < coupons + operations; id++) {
    const client = r.int(clients);
    const invokedAt = (clocks[client] as number) + r.next() * 2;
    const completedAt = invokedAt + 0.2 + r.next() * 6;
    clocks[client] = completedAt;
    let coupon = r.pick(names);
    let request = randomRequest(r, spanMs);
    let key: string | undefined;
    if ((request.kind === "claim" || request.kind === "release") && r.chance(0.4)) {
      const earlier = keys.length > 0 && r.chance(0.4) ? r.pick(keys) : undefined;
      if (earlier && r.chance(0.8))
        ({ coupon, request } = earlier); // the same request again
      else if (earlier) coupon = earlier.coupon; // another request with that key
      key = earlier?.key ?? `key-${id}`;
      if (!earlier) keys.push({ key, coupon, request });
    }
    const roll = r.next();
    const outcome = roll < 0.05 ? "applied" : roll < 0.1 ? "dropped" : roll < 0.12 ? "lost" : "answered";
    const at = invokedAt + r.next() * (completedAt - invokedAt);
    plans.push({ id, coupon, request, key, invokedAt, completedAt, at, outcome });
  }

  // Decided in the order of their instants, as the sequential rules say.
  const states = new Map<string, CouponState>(names.map((name) => [name, initialState]));
  const kept = new Map<string, { pin: string; answer: Answer }>();
  const operationsOut: Operation[] = [];
  for (const plan of [...plans].sort((a, b) => a.at - b.at)) {
    const { at, outcome, ...op } = plan;
    const requestId = `req-${op.id}`;
    const s = states.get(op.coupon) as CouponState;
    const pin = fingerprint(op.coupon, op.request);
    const held = op.key ? kept.get(op.key) : undefined;
    let answer: Answer | null;
    if (outcome === "dropped") answer = unavailable(requestId);
    else if (held && held.pin !== pin) {
      const reused: Decision = { expected: { status: 422, code: "IDEMPOTENCY_KEY_REUSED", keep: false } };
      answer = render(reused, at, op.coupon, requestId);
    } else if (held) {
      const body = held.answer.body as Record<string, unknown>;
      answer = {
        ...held.answer,
        body: "request_id" in body ? { ...body, request_id: requestId } : body,
        headers: { ...held.answer.headers, "idempotent-replayed": "true" },
      };
    } else {
      const decision = decide(op.coupon, s, op.request, at);
      answer = render(decision, at, op.coupon, requestId);
      if (decision.after) states.set(op.coupon, decision.after);
      if (op.key && decision.expected.keep) kept.set(op.key, { pin, answer });
    }
    if (outcome === "applied" && answer) answer = unavailable(requestId);
    if (outcome === "lost" && answer) answer = null;
    operationsOut.push({ ...op, completedAt: answer === null ? null : op.completedAt, answer });
  }
  return {
    toleranceMs: 0,
    operations: operationsOut.sort((a, b) => a.id - b.id),
    note: `generated from seed ${seed}`,
  };
}
