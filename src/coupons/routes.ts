// HTTP for coupons: parse, call one domain function, map its result. Nothing else lives here.
import { timingSafeEqual } from "node:crypto";
import { Elysia } from "elysia";
import type { Database } from "../db/client";
import { withDeadline } from "../db/deadline";
import { AppError, errorStatus, problemResponse } from "../errors";
import { jsonAnswer } from "../http/json-stream";
import { errorFields, type Logger } from "../log";
import type { Metrics } from "../metrics/metrics";
import { type Claimer, type ClaimResult, claimRequest, releaseRequest } from "./claims";
import { createCoupon, listCoupons, updateCoupon } from "./coupons";
import { claimDocs, createDocs, listDocs, readDocs, releaseDocs, updateDocs } from "./docs";
import { ClaimBody, ClaimParams, CouponParams, CreateCouponBody, ListQuery, UpdateCouponBody } from "./model";
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

/**
 * A claim's or release's expected refusal as its problem response: returned rather than thrown, with
 * set.status too, so the request log sees it.
 */
function rejection(
  result: ClaimResult,
  set: { status?: number | string; headers: Record<string, string | number | undefined> },
  path: string,
): Response {
  const { code, detail, retryAfter } = claimRejections[result.outcome as ClaimRejection];
  set.status = errorStatus[code];
  return problemResponse(code, detail, {
    instance: path,
    requestId: set.headers["x-request-id"] as string | undefined,
    retryAfter: result.retryAfter ?? retryAfter,
  });
}

/** The coupon API under /api/coupons. */
export function couponRoutes(deps: CouponRoutesDeps) {
  const { db, claimer, metrics, adminToken, requestTimeoutMs, log } = deps;
  const readOptions = { slots: deps.readSlots, pageSize: deps.readPageSize };
  const cutOff = (error: unknown) => log.warn("coupon read cut off mid-body", errorFields(error));
  return new Elysia({ prefix: "/api/coupons", tags: ["coupons"] })
    .post(
      "",
      async ({ body, set, headers }) => {
        if (adminToken) requireToken(headers.authorization, adminToken, "creating");
        const schedule = parseSchedule(body);
        const created = await withDeadline(createCoupon(db, body.name, body.amount, schedule), requestTimeoutMs);
        set.status = 201;
        set.headers.location = `/api/coupons/${encodeURIComponent(created.name)}`;
        return created;
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
      async ({ body, set, path }) => {
        const result = await claimer.claimCoupon(claimRequest(body.coupon_name, body.user_id, requestTimeoutMs));
        metrics.claimOutcomes[result.outcome].inc();
        if (result.outcome !== "created") return rejection(result, set, path);
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
        const updated = await withDeadline(updateCoupon(db, params.name, parseChange(body)), requestTimeoutMs);
        claimer.invalidate(params.name); // at once here; the other replicas hear it on the change feed
        return updated;
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
      async ({ params, headers, set, path }) => {
        if (adminToken) requireToken(headers.authorization, adminToken, "changing");
        const result = await claimer.claimCoupon(releaseRequest(params.name, params.user_id, requestTimeoutMs));
        metrics.claimOutcomes[result.outcome].inc();
        if (result.outcome !== "released") return rejection(result, set, path);
        return {
          coupon_name: params.name,
          user_id: params.user_id,
          released_at: (result.decidedAt as Date).toISOString(),
          remaining_amount: result.remaining as number,
        };
      },
      { params: ClaimParams, detail: releaseDocs },
    )
    .get(
      "/:name",
      async ({ params }) =>
        jsonAnswer(await readCoupon(db, params.name, Date.now() + requestTimeoutMs, readOptions), cutOff),
      {
        params: CouponParams,
        detail: readDocs,
      },
    );
}
