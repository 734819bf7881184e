// HTTP for coupons: each route parses its request, calls one function (the claimer for every write
// decided in turn on a coupon, the store for reads), and renders its result; refusals are rendered by
// the HTTP edge (problems.ts). Also here: each request's one deadline, which its access check (auth.ts)
// honours too.
import { Elysia } from "elysia";
import { type Claimer, claimRequest, releaseRequest, type Trace } from "../domain/claim";
import { claimNotHeld } from "../domain/errors";
import type { ReceiptSigner } from "../identity/receipts";
import type { TokenVerifier } from "../identity/tokens";
import { errorFields, type Logger } from "../log";
import type { Metrics } from "../metrics/metrics";
import { readClaim } from "../store/claim-read";
import { listCoupons } from "../store/coupons";
import type { Database } from "../store/database";
import { withDeadline } from "../store/deadline";
import { readCoupon } from "../store/read";
import type { ReadSlots } from "../store/read-slots";
import { accessRules } from "./auth";
import { authDocs } from "./auth-docs";
import {
  claimDocs,
  createDocs,
  heldDocs,
  idempotencyKeyDoc,
  listDocs,
  readDocs,
  releaseDocs,
  updateDocs,
} from "./coupon-docs";
import { IDEMPOTENCY_HEADER, keyOf } from "./idempotency";
import { jsonAnswer } from "./json-stream";
import {
  ClaimBody,
  ClaimParams,
  CouponParams,
  CreateCouponBody,
  IdempotencyHeaders,
  ListQuery,
  UpdateCouponBody,
} from "./models";
import { markReplayed, refusal } from "./problems";
import { parseChange, parseSchedule, refuseUnknownFields } from "./schedule";

export interface CouponRoutesDeps {
  db: Database;
  claimer: Claimer;
  metrics: Metrics;
  /** Signs a receipt into each claim's 201; unset, claims carry none. */
  receipts?: ReceiptSigner;
  /** ADMIN_TOKEN: when set, creating, changing and releasing require `Authorization: Bearer <adminToken>`. */
  adminToken?: string;
  /** Bearer JWTs (AUTH_*): when set, a claim requires its user's, and one with the admin scope may write (auth.ts). */
  tokens?: TokenVerifier;
  /** REQUEST_TIMEOUT_MS: a request's deadline from its arrival, for every wait it makes. */
  requestTimeoutMs: number;
  /** IDEMPOTENCY_TTL: how long an Idempotency-Key's answer is kept. */
  idempotencyTtlMs: number;
  /** The trace of a request being served, when tracing is on and it was sampled (app.ts starts it). */
  traceOf: (request: Request) => Trace | undefined;
  /** COUPON_READ_STREAMS_MAX and COUPON_READ_PAGE_SIZE: big reads streamed at once, and claimers per page. */
  readSlots: ReadSlots;
  readPageSize: number;
  log: Logger;
}

/** A claim, or with `release` the release of one, as a route reads it from its request. */
interface Decided {
  coupon: string;
  user: string;
  release?: boolean;
}

/** The coupon API under /api/coupons. */
export function couponRoutes(deps: CouponRoutesDeps) {
  const { db, claimer, metrics, requestTimeoutMs, idempotencyTtlMs, traceOf, log, receipts } = deps;
  const access = accessRules(deps.adminToken, deps.tokens);
  const secured = authDocs(deps.adminToken, deps.tokens);
  const readOptions = { slots: deps.readSlots, pageSize: deps.readPageSize };
  const cutOff = (error: unknown) => log.warn("coupon read cut off mid-body", errorFields(error));
  const keyed = (request: Request, route: string, fields: readonly unknown[]) =>
    keyOf(request.headers.get(IDEMPOTENCY_HEADER), route, fields, idempotencyTtlMs);
  // A claim or release on `coupon` for `user` that arrived at `arrivedAt`, with the request's key and
  // trace, counted by outcome.
  const decide = async (
    request: Request,
    route: string,
    arrivedAt: number,
    { coupon, user, release = false }: Decided,
  ) => {
    const extras = { arrivedAt, idempotency: keyed(request, route, [coupon, user]), trace: traceOf(request) };
    const result = await claimer.claimCoupon(
      (release ? releaseRequest : claimRequest)(coupon, user, requestTimeoutMs, extras),
    );
    metrics.claimOutcomes[result.outcome].inc();
    return result;
  };
  return new Elysia({ prefix: "/api/coupons", tags: ["coupons"] })
    .post(
      "",
      async ({ body, set, headers, request, path }) => {
        // One deadline from arrival, for the access check, the key's turn and the create.
        const deadline = performance.now() + requestTimeoutMs;
        if (access.admin) await access.admin(headers.authorization, "creating", deadline);
        const schedule = parseSchedule(body);
        const key = keyed(request, "POST /api/coupons", [body.name, body.amount, schedule.startsAt, schedule.endsAt]);
        const result = await claimer.createCoupon({
          name: body.name,
          amount: body.amount,
          schedule,
          deadline,
          ...(key ? { idempotency: key } : {}),
        });
        if (result.outcome !== "created") return refusal(result, body.name, set, path);
        set.status = 201;
        set.headers.location = `/api/coupons/${encodeURIComponent(result.coupon.name)}`;
        markReplayed(set, result.replayed);
        return result.coupon;
      },
      {
        body: CreateCouponBody,
        // The app's onParse still reads the body; "json" only tells the OpenAPI document its media type.
        parse: "json",
        detail: secured.admin(createDocs, "creating", "/api/coupons"),
      },
    )
    .post(
      "/claim",
      async ({ body, set, path, request }) => {
        const arrivedAt = performance.now();
        // Before the claim is queued: a refused caller never holds a place in its coupon's queue.
        if (access.claim) {
          const authorization = request.headers.get("authorization") ?? undefined;
          await access.claim(authorization, body.user_id, arrivedAt + requestTimeoutMs);
        }
        const claim = { coupon: body.coupon_name, user: body.user_id };
        const result = await decide(request, "POST /api/coupons/claim", arrivedAt, claim);
        if (result.outcome !== "created") return refusal(result, body.coupon_name, set, path);
        markReplayed(set, result.replayed);
        set.status = 201;
        // The spec's fields first, as they always were; what was added since follows them.
        const claimed = {
          user_id: body.user_id,
          coupon_name: body.coupon_name,
          claimed_at: result.decidedAt.toISOString(),
          seq: result.seq,
        };
        if (!receipts) return claimed;
        const receipt = await receipts.sign({ ...claim, seq: result.seq, claimedAt: result.decidedAt });
        return { ...claimed, receipt };
      },
      {
        body: ClaimBody,
        parse: "json", // as on create: documents the media type, the app's onParse reads the body
        detail: secured.claim(claimDocs),
      },
    )
    .get("", ({ query }) => withDeadline(listCoupons(db, Number(query.limit ?? 20), query.after), requestTimeoutMs), {
      query: ListQuery,
      detail: listDocs,
    })
    .patch(
      "/:name",
      async ({ params, body, headers }) => {
        // One deadline from arrival, for the access check, the announcement, its lease and the change.
        const deadline = performance.now() + requestTimeoutMs;
        if (access.admin) await access.admin(headers.authorization, "changing", deadline);
        return claimer.changeSale(params.name, parseChange(body), deadline);
      },
      {
        params: CouponParams,
        body: UpdateCouponBody,
        parse: "json",
        // Before validation, which would silently drop an unknown field (amount, a typo) from the body.
        transform: ({ body }) => refuseUnknownFields(body),
        detail: secured.admin(updateDocs, "changing", "/api/coupons/BLACK_FRIDAY"),
      },
    )
    .delete(
      "/:name/claims/:user_id",
      async ({ params, set, path, request }) => {
        const arrivedAt = performance.now();
        // From the request: the header schema below (for the docs) leaves only the key in `headers`.
        const authorization = request.headers.get("authorization") ?? undefined;
        if (access.admin) await access.admin(authorization, "changing", arrivedAt + requestTimeoutMs);
        const release = { coupon: params.name, user: params.user_id, release: true };
        const result = await decide(request, "DELETE /api/coupons/{name}/claims/{user_id}", arrivedAt, release);
        if (result.outcome !== "released") return refusal(result, params.name, set, path);
        markReplayed(set, result.replayed);
        return {
          coupon_name: params.name,
          user_id: params.user_id,
          released_at: result.decidedAt.toISOString(),
          remaining_amount: result.remaining,
        };
      },
      {
        params: ClaimParams,
        headers: IdempotencyHeaders(idempotencyKeyDoc),
        detail: secured.admin(releaseDocs, "changing", "/api/coupons/BLACK_FRIDAY/claims/user-42"),
      },
    )
    .get(
      "/:name/claims/:user_id",
      async ({ params }) => {
        const held = await readClaim(db, params.name, params.user_id, performance.now() + requestTimeoutMs);
        if (held.status !== "held") throw claimNotHeld(held.status === "released" ? held.releasedAt : undefined);
        return {
          coupon_name: params.name,
          user_id: params.user_id,
          claimed_at: held.claimedAt.toISOString(),
          seq: held.seq,
        };
      },
      { params: ClaimParams, detail: heldDocs },
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
