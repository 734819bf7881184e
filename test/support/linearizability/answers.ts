// Whether an answer a client got is the one the rules give (rules.ts), and over which instants of the
// database's clock it is: a 201 names its instant in claimed_at, a SALE_NOT_STARTED's Retry-After
// bounds it. A replay must be the first answer again, status, body and headers, bar its request id.
import type { Answer } from "./history";
import type { Expected, Kept } from "./rules";

/** Instants [from, to) on the database's clock; the whole line when an answer says nothing of time. */
export interface Span {
  from: number;
  to: number;
}
export const always: Span = { from: Number.NEGATIVE_INFINITY, to: Number.POSITIVE_INFINITY };

/**
 * A replica answering from memory counts Retry-After's seconds on its estimate of the database's clock,
 * which is off by up to that estimate's uncertainty (half a round trip: a few ms on a busy machine).
 */
export const RETRY_AFTER_SLACK_MS = 25;

/** An answer as a replay must repeat it: everything but the replay marker and the request id. */
export function comparable(answer: Answer): unknown {
  const { "idempotent-replayed": _, ...headers } = answer.headers;
  const body =
    typeof answer.body === "object" && answer.body !== null
      ? Object.fromEntries(Object.entries(answer.body).filter(([field]) => field !== "request_id"))
      : answer.body;
  return { status: answer.status, body, headers };
}

const show = (answer: Answer) => {
  const body = answer.body as { code?: string } | null;
  const retry = answer.headers["retry-after"];
  return `${answer.status}${body?.code ? ` ${body.code}` : ""}${retry ? ` (Retry-After ${retry})` : ""}`;
};
/** "409 SOLD_OUT", "201": an expected answer in a sentence. */
export const showExpected = (e: Expected) => `${e.status}${e.code ? ` ${e.code}` : ""}`;

/**
 * The instants at which `answer` is what the rules `expected` give, or why it is not. `replayed` says
 * whether the answer must carry Idempotent-Replayed.
 */
export function spanOf(expected: Expected, answer: Answer, replayed = false): Span | string {
  const body = answer.body as Record<string, unknown> | null;
  const got = show(answer);
  if (answer.status !== expected.status || (expected.code && body?.code !== expected.code)) {
    return `answered ${got}; the rules give ${showExpected(expected)}`;
  }
  if ((answer.headers["idempotent-replayed"] === "true") !== replayed) {
    return replayed ? `answered ${got} without Idempotent-Replayed` : `answered ${got} marked Idempotent-Replayed`;
  }
  const retryAfter = answer.headers["retry-after"];
  if (expected.code) {
    if (!answer.headers["content-type"]?.startsWith("application/problem+json"))
      return `answered ${got}, not a problem`;
    const retrying = expected.code === "IDEMPOTENCY_KEY_IN_USE" ? "1" : undefined;
    if (expected.opensAt === undefined) {
      return retryAfter === retrying ? always : `answered ${got}; the rules give Retry-After ${retrying ?? "none"}`;
    }
    // ceil((opensAt - at) / 1000) = r, and 1 for anything within the last second.
    const r = Number(retryAfter);
    if (!Number.isInteger(r) || r < 1) return `answered ${got}; SALE_NOT_STARTED needs Retry-After >= 1`;
    return {
      from: expected.opensAt - r * 1000 - RETRY_AFTER_SLACK_MS,
      to: (r === 1 ? expected.opensAt : expected.opensAt - (r - 1) * 1000) + RETRY_AFTER_SLACK_MS,
    };
  }
  if (retryAfter !== undefined) return `answered ${got}; the rules give no Retry-After`;
  if (expected.location !== undefined && answer.headers.location !== expected.location) {
    return `answered ${got} with Location ${answer.headers.location}; the rules give ${expected.location}`;
  }
  const { [expected.instant ?? ""]: at, ...rest } = body ?? {};
  if (!Bun.deepEquals(rest, expected.body ?? {}, true)) {
    return `answered ${got} ${JSON.stringify(rest)}; the rules give ${JSON.stringify(expected.body)}`;
  }
  if (!expected.instant) return always;
  const ms = typeof at === "string" ? Date.parse(at) : Number.NaN;
  if (Number.isNaN(ms)) return `answered ${got} without a valid ${expected.instant}`;
  return { from: ms, to: ms + 1 }; // the database's instant, to the millisecond (toISOString truncates)
}

/** Whether `answer` replays `kept` (any instant), or why not; `toleranceMs` for a decision nobody saw. */
export function replays(kept: Kept, answer: Answer, toleranceMs: number): true | string {
  if (answer.headers["idempotent-replayed"] !== "true") return `answered ${show(answer)}, not the replay it must be`;
  if (kept.answer !== undefined) {
    const again = comparable(answer);
    return Bun.deepEquals(again, kept.answer, true)
      ? true
      : `replayed ${JSON.stringify(again)}; the first answer was ${JSON.stringify(kept.answer)}`;
  }
  const span = spanOf(kept.expected as Expected, answer, true);
  if (typeof span === "string") return `replay ${span}`;
  return span.to > (kept.after ?? Number.NEGATIVE_INFINITY) - toleranceMs
    ? true
    : `replayed an instant before its first request was sent`;
}
