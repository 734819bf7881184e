// Linearizability of a history: is there one order of its operations, each taking effect at an instant
// between its request and its answer, in which every answer is what the sequential rules give? The
// search is Wing and Gong's, with Lowe's memo as Porcupine has it: a pair (operations placed, state)
// found once is never explored again. Coupons are independent, so each is searched alone. An operation
// with an unknown effect (a 503, no answer) may take effect at any instant after its request, or never.
import { byCoupon, type History, type Operation, prefixAt, unknownEffect } from "./history";
import { step } from "./model";
import { type CouponState, initialState, type Kept } from "./rules";

export interface CouponVerdict {
  coupon: string;
  linearizable: boolean;
  /** The search gave up past its budget: neither shown nor refuted. */
  undecided: boolean;
  operations: Operation[];
  /** States the search visited. */
  nodes: number;
  /** When not linearizable: the longest order it found in which every answer fits, and the state it ends in. */
  deepest?: { order: Operation[]; state: CouponState };
  /** A key's IDEMPOTENCY_KEY_IN_USE answered while no other request with the key was in flight. */
  lonelyInUse?: Operation;
  /** Of a shortest failing prefix: the answer it ends with (everything answered before it is explained). */
  decisive?: Operation;
}

export interface CheckOptions {
  /** States one coupon's search may visit before giving up (undecided). */
  budget?: number;
}

const DEFAULT_BUDGET = 2_000_000;

/** Kept decisions by content, numbered: a state's key names them by number (they can be long). */
function keptNumbers() {
  const byObject = new WeakMap<Kept, number>();
  const byContent = new Map<string, number>();
  return (kept: Kept): number => {
    let number = byObject.get(kept);
    if (number === undefined) {
      const content = JSON.stringify(kept);
      number = byContent.get(content) ?? byContent.size;
      byContent.set(content, number);
      byObject.set(kept, number);
    }
    return number;
  };
}

/**
 * The key of a state for the memo: everything but its clock (an earlier clock leaves more open). Its
 * keys' part is computed once per keys object: most steps leave a state's keys as they were.
 */
function stateKeys() {
  const numberOf = keptNumbers();
  const ofKeys = new WeakMap<CouponState["keys"], string>();
  return (s: CouponState): string => {
    let keys = ofKeys.get(s.keys);
    if (keys === undefined) {
      keys = Object.entries(s.keys)
        .map(([key, kept]) => `${key} ${numberOf(kept)}`)
        .sort()
        .join("\n");
      ofKeys.set(s.keys, keys);
    }
    return JSON.stringify([s.exists, s.amount, s.holders, s.lastSeq, s.active, s.startsAt, s.endsAt, keys]);
  };
}

const inUse = (op: Operation) => (op.answer?.body as { code?: string } | null)?.code === "IDEMPOTENCY_KEY_IN_USE";

/** Searches one coupon's operations for an order that explains every answer. */
export function checkCoupon(
  coupon: string,
  operations: readonly Operation[],
  toleranceMs: number,
  { budget = DEFAULT_BUDGET }: CheckOptions = {},
): CouponVerdict {
  // A read with no answer changed nothing.
  const ops = operations
    .filter((op) => !(op.request.kind === "read" && unknownEffect(op)))
    .sort((a, b) => a.invokedAt - b.invokedAt);
  const verdict: CouponVerdict = { coupon, linearizable: true, undecided: false, operations: ops, nodes: 0 };
  const lonelyInUse = ops.find(
    (op) =>
      inUse(op) &&
      !ops.some(
        (other) =>
          other !== op &&
          other.key === op.key &&
          other.invokedAt < (op.completedAt as number) &&
          (other.completedAt ?? Number.POSITIVE_INFINITY) > op.invokedAt,
      ),
  );
  if (lonelyInUse) return { ...verdict, linearizable: false, lonelyInUse };

  const n = ops.length;
  const inv = ops.map((op) => op.invokedAt);
  const ret = ops.map((op) => (unknownEffect(op) ? Number.POSITIVE_INFINITY : (op.completedAt as number)));
  // Answered operations in invocation order and in answer order; those of unknown effect apart (few,
  // and waiting to be placed until the end, they would make every scan start at the oldest one).
  const answered = ops.flatMap((op, i) => (unknownEffect(op) ? [] : [i]));
  const unknowns = ops.flatMap((op, i) => (unknownEffect(op) ? [i] : []));
  const byRet = [...answered].sort((a, b) => (ret[a] as number) - (ret[b] as number));
  const invRank = new Array<number>(n);
  const retRank = new Array<number>(n);
  for (const [rank, i] of answered.entries()) invRank[i] = rank;
  for (const [rank, i] of byRet.entries()) retRank[i] = rank;
  const placed = new Uint8Array(n);
  const bits = new Uint16Array(Math.ceil(n / 16));
  let firstInv = 0; // no answered operation before it in `answered` is left to place
  let firstRet = 0; // nor before it in `byRet`
  let answeredLeft = answered.length;
  const uses = new Map<string, number>();
  for (const op of ops) if (op.key) uses.set(op.key, (uses.get(op.key) ?? 0) + 1);
  const ctx = { coupon, toleranceMs, live: (key: string) => (uses.get(key) ?? 0) > 0 };
  const memo = new Map<string, number>();
  const stateKey = stateKeys();

  const place = (i: number, on: boolean) => {
    placed[i] = on ? 1 : 0;
    bits[i >> 4] = (bits[i >> 4] as number) ^ (1 << (i & 15));
    const key = ops[i]?.key;
    if (key) uses.set(key, (uses.get(key) as number) + (on ? -1 : 1));
    if (ret[i] === Number.POSITIVE_INFINITY) return;
    answeredLeft += on ? -1 : 1;
    if (on) {
      while (firstInv < answered.length && placed[answered[firstInv] as number]) firstInv++;
      while (firstRet < byRet.length && placed[byRet[firstRet] as number]) firstRet++;
    } else {
      firstInv = Math.min(firstInv, invRank[i] as number);
      firstRet = Math.min(firstRet, retRank[i] as number);
    }
  };

  /** The next states from `state`: each operation that may come next (none still to place answered before it was sent), in the order to try them. */
  const expand = (state: CouponState): { i: number; state: CouponState }[] => {
    const before = ret[byRet[firstRet] as number] ?? Number.POSITIVE_INFINITY;
    const candidates: number[] = [];
    for (let r = firstInv; r < answered.length && (inv[answered[r] as number] as number) <= before; r++) {
      if (!placed[answered[r] as number]) candidates.push(answered[r] as number);
    }
    // Unknown effects with the same request and key are interchangeable: the earliest sent can do all the others can.
    const alike = new Set<string>();
    for (const i of unknowns) {
      const op = ops[i] as Operation;
      if (placed[i] || op.invokedAt > before) continue;
      const same = JSON.stringify([op.request, op.key]);
      if (!alike.has(same)) candidates.push(i);
      alike.add(same);
    }
    const children: { i: number; state: CouponState }[] = [];
    const placedBits = String.fromCharCode(...bits);
    for (const i of candidates) {
      const op = ops[i] as Operation;
      place(i, true);
      const next = step(state, op, ctx);
      if (typeof next !== "string") {
        const word = i >> 4;
        const memoBits =
          placedBits.slice(0, word) + String.fromCharCode(bits[word] as number) + placedBits.slice(word + 1);
        for (let s of next) {
          if (op.key && !ctx.live(op.key) && op.key in s.keys) {
            const { [op.key]: _, ...keys } = s.keys;
            s = { ...s, keys };
          }
          const memoKey = `${memoBits}${stateKey(s)}`;
          if ((memo.get(memoKey) ?? Number.POSITIVE_INFINITY) <= s.clock) continue;
          memo.set(memoKey, s.clock);
          children.push({ i, state: s });
        }
      }
      place(i, false);
    }
    return children.reverse(); // popped from the end: the first found is tried first
  };

  const frames: { via: number; state: CouponState; children: { i: number; state: CouponState }[] }[] = [];
  let deepest: number[] = [];
  let deepestState = initialState;
  if (answeredLeft === 0) return verdict;
  frames.push({ via: -1, state: initialState, children: expand(initialState) });
  while (frames.length > 0) {
    const top = frames[frames.length - 1] as (typeof frames)[number];
    const child = top.children.pop();
    if (!child) {
      frames.pop();
      if (top.via >= 0) place(top.via, false);
      continue;
    }
    place(child.i, true);
    // Every answer placed: what is left has an unknown effect and may never have taken one.
    if (answeredLeft === 0) return verdict;
    if (++verdict.nodes > budget) return { ...verdict, linearizable: false, undecided: true };
    if (frames.length > deepest.length) {
      deepest = [...frames.slice(1).map((f) => f.via), child.i];
      deepestState = child.state;
    }
    frames.push({ via: child.i, state: child.state, children: expand(child.state) });
  }
  const order = deepest.map((i) => ops[i] as Operation);
  return { ...verdict, linearizable: false, deepest: { order, state: deepestState } };
}

/** The verdict on each coupon of `history`. */
export function checkHistory(history: History, options: CheckOptions = {}): CouponVerdict[] {
  return [...byCoupon(history)].map(([coupon, ops]) => checkCoupon(coupon, ops, history.toleranceMs, options));
}

/**
 * The shortest prefix of a coupon's operations (cut at an answer) that is already not linearizable: a
 * prefix of a linearizable history is linearizable, so it is found by bisection. Undecided prefixes
 * count as linearizable, which can only make the prefix found longer.
 */
export function shortestFailingPrefix(
  verdict: CouponVerdict,
  toleranceMs: number,
  options: CheckOptions = {},
): CouponVerdict {
  const answers = verdict.operations
    .filter((op) => op.answer !== null)
    .map((op) => op.completedAt)
    .filter((at): at is number => at !== null)
    .sort((a, b) => a - b);
  let failing = verdict;
  let [lo, hi] = [0, answers.length - 1];
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const cut = checkCoupon(verdict.coupon, prefixAt(verdict.operations, answers[mid] as number), toleranceMs, options);
    if (!cut.linearizable && !cut.undecided) {
      failing = cut;
      hi = mid;
    } else lo = mid + 1;
  }
  const decisive = verdict.operations.find((op) => op.answer !== null && op.completedAt === answers[hi]);
  return decisive ? { ...failing, decisive } : failing;
}
