// HTTP for coupons: parse, call one domain function, map its result. Nothing else lives here.
import { timingSafeEqual } from "node:crypto";
import { Elysia } from "elysia";
import type { Database } from "../db/client";
import { withDeadline } from "../db/deadline";
import { AppError, type ErrorCode, errorStatus, problemResponse, REPLAYED_HEADER } from "../errors";
import { jsonAnswer } from "../http/json-stream";
import { errorFields, type Logger } from "../log";
import type { Metrics } from "../metrics/metrics";
import type { RequestTrace } from "../tracing/tracing";
import { type Claimer, type ClaimRequest, type ClaimResult, claimRequest, releaseRequest } from "./claims";
import { createCoupon, listCoupons, updateCoupon } from "./coupons";
import { claimDocs, createDocs, idempotencyKeyDoc, listDocs, readDocs, releaseDocs, updateDocs } from "./docs";
import { dropFence, tooLateForFence } from "./fence";
import { createKeyTurns, IDEMPOTENCY_HEADER, type IdempotencyKey, keyOf } from "./idempotency";
import {
  ClaimBody,
  ClaimParams,
  CouponParams,
  CreateCouponBody,
  IdempotencyHeaders,
  ListQuery,
  UpdateCouponBody,
} from "./model";
import { type ClaimRejection, claimRejections } from "./outcomes";
import { readCoupon } from "./read";
import type { ReadSlots } from "./read-slots";
import { parseChange, parseSchedule, refuseUnknownFields } from "./schedule";

export interface CouponRoutesDeps {
  db: Database;
  claimer: Claimer;
  metrics: Metrics;
  /** When set, creating a coupon requires `Authorization: Bearer <adminToken>`. */
  adminToken?: string;
  /** A request's deadline from its arrival: how long it may wait, on the queue or the database. */
  requestTimeoutMs: number;
  /** IDEMPOTENCY_TTL: how long an Idempotency-Key's answer is kept. */
  idempotencyTtlMs: number;
  /** The trace of a request being served, when tracing is on (app.ts starts it). */
  traceOf?: (request: Request) => RequestTrace | undefined;
  /** Bound on big reads streamed at once, and claimers per page of them. */
  readSlots: ReadSlots;
  readPageSize: number;
  log: Logger;
}

/**
 * Checks the bearer token in constant time (length leaks nothing useful: tokens are fixed-size
 * secrets); `action` ("creating", "changing") names what it guards in the problem's detail.
 */
function requireToken(authorization: string | undefined, token: string, action: string): void {
  const match = /^Bearer (.+)$/i.exec(authorization ?? "");
  if (!match?.[1]) {
    const doing = action[0]?.toUpperCase() + action.slice(1);
    throw new AppError("UNAUTHORIZED", `${doing} coupons requires Authorization: Bearer <token>.`);
  }
  const given = Buffer.from(match[1]);
  const expected = Buffer.from(token);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    throw new AppError("FORBIDDEN", `The bearer token is not valid for ${action} coupons.`);
  }
}

type ResponseSet = { status?: number | string; headers: Record<string, string | number | undefined> };

/**
 * An expected refusal as its problem response: returned rather than thrown, with set.status too, so
 * the request log sees it; the same body onError would render for the same AppError.
 */
function refusal(
  code: ErrorCode,
  detail: string,
  set: ResponseSet,
  path: string,
  options: { retryAfter?: number; replayed?: boolean } = {},
): Response {
  set.status = errorStatus[code];
  return problemResponse(code, detail, {
    instance: path,
    requestId: set.headers["x-request-id"] as string | undefined,
    ...options,
  });
}

/**
 * A claim's or release's refusal, by the outcomes table. Retry-After only on an answer a later retry
 * can change (the table's `retry`): those are never stored under a key, so a replay never lacks it.
 */
function rejection(result: ClaimResult, set: ResponseSet, path: string): Response {
  const { code, detail, retryAfter, retry } = claimRejections[result.outcome as ClaimRejection];
  const wait = retry ? (result.retryAfter ?? retryAfter) : undefined;
  return refusal(code, detail, set, path, { retryAfter: wait, replayed: result.replayed });
}

/** Marks a success given again from its Idempotency-Key (problems carry the header by problemResponse). */
function markReplayed(set: ResponseSet, replayed: boolean | undefined): void {
  if (replayed) set.headers[REPLAYED_HEADER] = "true";
}

const inUse: ClaimResult = Object.freeze({ outcome: "idempotency_key_in_use" });
// Sent, with no answer by its deadline: its transaction may still be running.
const isUnconfirmed = (result: ClaimResult) => result.outcome === "unconfirmed";

/** The coupon API under /api/coupons. */
export function couponRoutes(deps: CouponRoutesDeps) {
  const { db, claimer, metrics, adminToken, requestTimeoutMs, idempotencyTtlMs, log } = deps;
  const traceOf = deps.traceOf ?? (() => undefined);
  const readOptions = { slots: deps.readSlots, pageSize: deps.readPageSize };
  const cutOff = (error: unknown) => log.warn("coupon read cut off mid-body", errorFields(error));
  const turns = createKeyTurns();
  const keyed = (request: Request, route: string, fields: readonly unknown[]) =>
    keyOf(request.headers.get(IDEMPOTENCY_HEADER), route, fields, idempotencyTtlMs);
  // A claim or release: with a key, one request per key at a time in this process.
  const decide = async (request: ClaimRequest, key?: IdempotencyKey) => {
    const result = key
      ? await turns.take(key.key, request.deadline, () => claimer.claimCoupon(request), isUnconfirmed)
      : await claimer.claimCoupon(request);
    const answer = result === "in_use" ? inUse : result;
    metrics.claimOutcomes[answer.outcome].inc();
    return answer;
  };
  return new Elysia({ prefix: "/api/coupons", tags: ["coupons"] })
    .post(
      "",
      async ({ body, set, headers, request, path }) => {
        if (adminToken) requireToken(headers.authorization, adminToken, "creating");
        const schedule = parseSchedule(body);
        const key = keyed(request, "POST /api/coupons", [body.name, body.amount, schedule.startsAt, schedule.endsAt]);
        // One deadline from arrival, whether or not the request waited for its key's turn.
        const deadline = performance.now() + requestTimeoutMs;
        const create = () =>
          withDeadline(createCoupon(db, body.name, body.amount, schedule, key), deadline - performance.now());
        // A create that failed (or timed out) leaves its key in use for the requests waiting on it.
        const result = key ? await turns.take(key.key, deadline, create, () => false) : await create();
        if (result === "in_use") return rejection(inUse, set, path);
        if (result.outcome === "reused") return rejection({ outcome: "idempotency_key_reused" }, set, path);
        const replayed = result.replayed === true;
        if (result.outcome === "exists") {
          const detail = `A coupon named ${JSON.stringify(body.name)} already exists.`;
          return refusal("COUPON_EXISTS", detail, set, path, { replayed });
        }
        set.status = 201;
        set.headers.location = `/api/coupons/${encodeURIComponent(result.coupon.name)}`;
        markReplayed(set, replayed);
        return result.coupon;
      },
      {
        body: CreateCouponBody,
        // The app's onParse still reads the body; "json" only tells the OpenAPI document its media type.
        parse: "json",
        detail: createDocs,
      },
    )
    .post(
      "/claim",
      async ({ body, set, path, request }) => {
        const key = keyed(request, "POST /api/coupons/claim", [body.coupon_name, body.user_id]);
        const result = await decide(
          claimRequest(body.coupon_name, body.user_id, requestTimeoutMs, { idempotency: key, trace: traceOf(request) }),
          key,
        );
        if (result.outcome !== "created") return rejection(result, set, path);
        markReplayed(set, result.replayed);
        set.status = 201;
        return {
          user_id: body.user_id,
          coupon_name: body.coupon_name,
          claimed_at: (result.decidedAt as Date).toISOString(),
        };
      },
      {
        body: ClaimBody,
        parse: "json", // as on create: documents the media type, the app's onParse reads the body
        detail: claimDocs,
      },
    )
    .get("", ({ query }) => withDeadline(listCoupons(db, Number(query.limit ?? 20), query.after), requestTimeoutMs), {
      query: ListQuery,
      detail: listDocs,
    })
    .patch(
      "/:name",
      async ({ params, body, headers }) => {
        if (adminToken) requireToken(headers.authorization, adminToken, "changing");
        const change = parseChange(body);
        // One deadline from arrival, for the fence, its lease and the change.
        const deadline = performance.now() + requestTimeoutMs;
        const fence = await withDeadline(claimer.fence(params.name, deadline), requestTimeoutMs);
        if (fence === undefined)
          throw new AppError("COUPON_NOT_FOUND", `No coupon named ${JSON.stringify(params.name)}.`);
        if (fence === "late") throw tooLateForFence();
        try {
          return await withDeadline(updateCoupon(db, params.name, change, fence), deadline - performance.now());
        } catch (error) {
          // The change was refused or may never commit: its fence need not stand until it expires.
          void dropFence(db, fence).catch(() => {});
          throw error;
        } finally {
          claimer.invalidate(params.name); // at once here; the other replicas hear it on the change feed
        }
      },
      {
        params: CouponParams,
        body: UpdateCouponBody,
        parse: "json",
        // Before validation, which would silently drop an unknown field (amount, a typo) from the body.
        transform: ({ body }) => refuseUnknownFields(body),
        detail: updateDocs,
      },
    )
    .delete(
      "/:name/claims/:user_id",
      async ({ params, set, path, request }) => {
        // From the request: the header schema below (for the docs) leaves only the key in `headers`.
        if (adminToken) requireToken(request.headers.get("authorization") ?? undefined, adminToken, "changing");
        const key = keyed(request, "DELETE /api/coupons/{name}/claims/{user_id}", [params.name, params.user_id]);
        const result = await decide(
          releaseRequest(params.name, params.user_id, requestTimeoutMs, { idempotency: key, trace: traceOf(request) }),
          key,
        );
        if (result.outcome !== "released") return rejection(result, set, path);
        markReplayed(set, result.replayed);
        return {
          coupon_name: params.name,
          user_id: params.user_id,
          released_at: (result.decidedAt as Date).toISOString(),
          remaining_amount: result.remaining as number,
        };
      },
      { params: ClaimParams, headers: IdempotencyHeaders(idempotencyKeyDoc), detail: releaseDocs },
    )
    .get(
      "/:name",
      async ({ params }) =>
        jsonAnswer(await readCoupon(db, params.name, performance.now() + requestTimeoutMs, readOptions), cutOff),
      {
        params: CouponParams,
        detail: readDocs,
      },
    );
}
