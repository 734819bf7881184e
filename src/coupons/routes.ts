// HTTP for coupons: parse, call one domain function, map its result. Nothing else lives here.
import { timingSafeEqual } from "node:crypto";
import { Elysia } from "elysia";
import type { Database } from "../db/client";
import { withDeadline } from "../db/deadline";
import { AppError, errorStatus, problemResponse } from "../errors";
import { documentedResponses } from "../http/problems";
import type { Metrics } from "../metrics/metrics";
import type { Claimer } from "./claimer";
import { createCoupon, getCoupon } from "./coupons";
import { ClaimBody, ClaimCreated, CouponCreated, CouponDetails, CouponParams, CreateCouponBody } from "./model";

export interface CouponRoutesDeps {
  db: Database;
  claimer: Claimer;
  metrics: Metrics;
  /** When set, creating a coupon requires `Authorization: Bearer <adminToken>`. */
  adminToken?: string;
  /** How long a create or read may wait on the database before answering 503. */
  requestTimeoutMs: number;
}

// Expected answers of a claim, not failures: returned as problem responses, never thrown.
const rejections = {
  already_claimed: ["ALREADY_CLAIMED", "This user already holds this coupon."],
  sold_out: ["SOLD_OUT", "No stock left."],
  not_found: ["COUPON_NOT_FOUND", "No such coupon."],
} as const;

/** Checks the bearer token in constant time (length leaks nothing useful: tokens are fixed-size secrets). */
function requireToken(authorization: string | undefined, token: string): void {
  const match = /^Bearer (.+)$/i.exec(authorization ?? "");
  if (!match?.[1]) throw new AppError("UNAUTHORIZED", "Creating coupons requires Authorization: Bearer <token>.");
  const given = Buffer.from(match[1]);
  const expected = Buffer.from(token);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    throw new AppError("FORBIDDEN", "The bearer token is not valid for creating coupons.");
  }
}

/** The coupon API under /api/coupons. */
export function couponRoutes({ db, claimer, metrics, adminToken, requestTimeoutMs }: CouponRoutesDeps) {
  return new Elysia({ prefix: "/api/coupons", tags: ["coupons"] })
    .post(
      "",
      async ({ body, set, headers }) => {
        if (adminToken) requireToken(headers.authorization, adminToken);
        const created = await withDeadline(createCoupon(db, body.name, body.amount), requestTimeoutMs);
        set.status = 201;
        set.headers.location = `/api/coupons/${encodeURIComponent(created.name)}`;
        return created;
      },
      {
        body: CreateCouponBody,
        detail: {
          summary: "Create a coupon",
          description: "Creates a coupon with `amount` in stock.",
          responses: documentedResponses(
            { status: 201, description: "Created; Location names the coupon", schema: CouponCreated },
            {
              400: "Invalid body (VALIDATION_FAILED)",
              401: "Missing bearer token, when ADMIN_TOKEN is set (UNAUTHORIZED)",
              403: "Wrong bearer token (FORBIDDEN)",
              409: "Name taken (COUPON_EXISTS)",
              413: "Body over 1 MiB (PAYLOAD_TOO_LARGE)",
              415: "Content-Type is not application/json (UNSUPPORTED_MEDIA_TYPE)",
              500: "Unexpected failure (INTERNAL_ERROR)",
              503: "Database unavailable (SERVICE_UNAVAILABLE)",
            },
          ),
        },
      },
    )
    .post(
      "/claim",
      async ({ body, set, path }) => {
        const decision = await claimer.claim(body.coupon_name, body.user_id);
        metrics.claimOutcomes[decision.outcome].inc();
        if (decision.outcome !== "created") {
          // set.status too, so the request log and metrics see what was answered.
          const [code, detail] = rejections[decision.outcome];
          set.status = errorStatus[code];
          return problemResponse(code, detail, { instance: path, requestId: set.headers["x-request-id"] });
        }
        set.status = 201;
        return {
          user_id: body.user_id,
          coupon_name: body.coupon_name,
          claimed_at: (decision.claimedAt as Date).toISOString(),
        };
      },
      {
        body: ClaimBody,
        detail: {
          summary: "Claim a coupon for a user",
          description: "At most one claim per user per coupon; never more claims than stock.",
          responses: documentedResponses(
            { status: 201, description: "Claimed", schema: ClaimCreated },
            {
              400: "Invalid body (VALIDATION_FAILED)",
              404: "No such coupon (COUPON_NOT_FOUND)",
              409: "ALREADY_CLAIMED (checked first, even when sold out) or SOLD_OUT",
              413: "Body over 1 MiB (PAYLOAD_TOO_LARGE)",
              415: "Content-Type is not application/json (UNSUPPORTED_MEDIA_TYPE)",
              500: "Unexpected failure (INTERNAL_ERROR)",
              503: "Overloaded or database unavailable, with Retry-After; not confirmed, safe to retry",
            },
          ),
        },
      },
    )
    .get("/:name", ({ params }) => withDeadline(getCoupon(db, params.name), requestTimeoutMs), {
      params: CouponParams,
      detail: {
        summary: "Read a coupon",
        description: "Stock and the user ids that claimed it, in claim order.",
        responses: documentedResponses(
          { status: 200, description: "The coupon", schema: CouponDetails },
          {
            400: "Invalid name (VALIDATION_FAILED)",
            404: "No such coupon (COUPON_NOT_FOUND)",
            500: "Unexpected failure (INTERNAL_ERROR)",
            503: "Database unavailable (SERVICE_UNAVAILABLE)",
          },
        ),
      },
    });
}
