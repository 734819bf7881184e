// Records a history of real requests: each sent over HTTP to a replica, with the instants it was sent
// and answered on the database's clock (this process's monotonic clock, sub-millisecond, plus its
// offset to the database's measured at the start), and the answer.
import type postgres from "postgres";
import type { Client } from "../http";
import { ANSWER_HEADERS, type Answer, type History, type Operation, type Request } from "./history";

export interface Recorder {
  /** The database's clock as this process estimates it (epoch ms). */
  now(): number;
  /** Sends `request` on `coupon` to replica `replica` (with `key` as Idempotency-Key) and records it. */
  send(replica: number, coupon: string, request: Request, key?: string): Promise<Operation>;
  /** Everything recorded so far. */
  history(note?: string): History;
}

/** Base tolerance between the recorder's clock and the database's, on top of the offset's measured uncertainty. */
const CLOCK_TOLERANCE_MS = 1;

/** The database's clock minus this process's monotonic one, from the round trip that took least of `samples`. */
async function clockOffset(sql: postgres.Sql, samples = 20): Promise<{ offsetMs: number; uncertaintyMs: number }> {
  const local = () => performance.timeOrigin + performance.now();
  let best = { offsetMs: 0, uncertaintyMs: Number.POSITIVE_INFINITY };
  for (let i = 0; i < samples; i++) {
    const before = local();
    const [row] = await sql<
      { ms: number }[]
    >`select ${i}::int as n, extract(epoch from clock_timestamp()) * 1000 as ms`;
    const after = local();
    const uncertaintyMs = (after - before) / 2;
    if (uncertaintyMs < best.uncertaintyMs) best = { offsetMs: Number(row?.ms) - (before + after) / 2, uncertaintyMs };
  }
  return best;
}

const path = (coupon: string, request: Request) => {
  const name = encodeURIComponent(coupon);
  if (request.kind === "create") return ["POST", "/api/coupons"];
  if (request.kind === "claim") return ["POST", "/api/coupons/claim"];
  if (request.kind === "release") return ["DELETE", `/api/coupons/${name}/claims/${encodeURIComponent(request.user)}`];
  return [request.kind === "patch" ? "PATCH" : "GET", `/api/coupons/${name}`];
};

const body = (coupon: string, request: Request): unknown => {
  const { kind, ...fields } = request;
  if (kind === "create") return { name: coupon, ...fields };
  if (kind === "claim") return { user_id: (request as { user: string }).user, coupon_name: coupon };
  return kind === "patch" ? fields : undefined;
};

/** A recorder over `replicas`, its clock set against the database `sql` reaches. */
export async function createRecorder(replicas: Client[], sql: postgres.Sql): Promise<Recorder> {
  const { offsetMs, uncertaintyMs } = await clockOffset(sql);
  const now = () => performance.timeOrigin + performance.now() + offsetMs;
  const operations: Operation[] = [];
  return {
    now,
    async send(replica, coupon, request, key) {
      const [method, url] = path(coupon, request) as [string, string];
      const json = body(coupon, request);
      const op: Operation = {
        id: operations.length,
        coupon,
        request,
        invokedAt: now(),
        completedAt: null,
        answer: null,
      };
      if (key !== undefined) op.key = key;
      op.replica = replica;
      operations.push(op);
      try {
        const res = await (replicas[replica] as Client).call(method, url, {
          ...(json === undefined ? {} : { json }),
          ...(key === undefined ? {} : { headers: { "idempotency-key": key } }),
        });
        op.completedAt = now();
        const headers = Object.fromEntries(
          ANSWER_HEADERS.flatMap((name) => (res.headers.has(name) ? [[name, res.headers.get(name) as string]] : [])),
        );
        op.answer = { status: res.status, body: res.body, headers } satisfies Answer;
      } catch {
        // No answer (the connection broke): the effect is unknown.
      }
      return op;
    },
    history: (note) => ({
      toleranceMs: Math.ceil((CLOCK_TOLERANCE_MS + uncertaintyMs) * 100) / 100,
      operations: operations.map((op) => ({ ...op })),
      ...(note ? { note } : {}),
    }),
  };
}
