// The OpenAPI description of the coupon routes: summaries, security and every documented answer with
// its example problems. The refusals come from domain/outcomes.ts and the failures from the code that
// raises them, so the docs cannot drift.
import type { DocumentDecoration } from "elysia";
import { claimNotHeld, couponNotFound } from "../domain/errors";
import { detailOf, rejections } from "../domain/outcomes";
import { readTooSlow } from "../store/read";
import { readsInFlight } from "../store/read-slots";
import { MAX_BODY_BYTES } from "./body";
import {
  ClaimCreated,
  ClaimReleased,
  CouponCreated,
  CouponDetails,
  CouponPage,
  CouponSummary,
  HeldClaim,
} from "./models";
import { codesWithStatus, commonProblems, documentedResponses, rejectionsWithStatus } from "./openapi";

/** What either POST may answer about its body, and the generic 500. */
const bodyProblems = {
  413: {
    description: `Body over ${MAX_BODY_BYTES / 1024} KiB (PAYLOAD_TOO_LARGE)`,
    problems: { tooLarge: commonProblems.tooLarge },
  },
  415: {
    description: "Content-Type is not application/json (UNSUPPORTED_MEDIA_TYPE)",
    problems: { notJson: commonProblems.notJson },
  },
  500: {
    description: "Unexpected failure (INTERNAL_ERROR)",
    problems: { internal: commonProblems.internal },
  },
};

/** The 401 and 403 of a route behind ADMIN_TOKEN; `action` as the problem's detail says it. */
const adminProblems = (action: "Creating" | "Changing") => ({
  401: {
    description: "Missing bearer token, when ADMIN_TOKEN is set (UNAUTHORIZED)",
    problems: {
      UNAUTHORIZED: {
        code: "UNAUTHORIZED" as const,
        detail: `${action} coupons requires Authorization: Bearer <token>.`,
      },
    },
  },
  403: {
    description: "Wrong bearer token (FORBIDDEN)",
    problems: {
      FORBIDDEN: {
        code: "FORBIDDEN" as const,
        detail: `The bearer token is not valid for ${action.toLowerCase()} coupons.`,
      },
    },
  },
});

const notFound = { code: "COUPON_NOT_FOUND" as const, detail: couponNotFound("BLACK_FRIDAY").message };

const databaseProblems = {
  databaseUnavailable: commonProblems.databaseUnavailable,
  databaseSlow: commonProblems.databaseSlow,
} as const;

/** The Idempotency-Key header, as create and claim document it (release declares it as a header schema). */
export const idempotencyKeyDoc = {
  description:
    'Optional. 1..255 printable ASCII characters, bare or as a quoted string ("..."). The first request with a key is executed and its answer stored with its effect; the same key with the same request gets that answer again (Idempotent-Replayed: true) for IDEMPOTENCY_TTL (default 24 h), from any replica. Answers that ask for a retry (503, SALE_PAUSED, SALE_NOT_STARTED, IDEMPOTENCY_KEY_IN_USE) are not stored. The same key with another request: 422 IDEMPOTENCY_KEY_REUSED.',
  examples: ["5f0c3a9e-8b1d-4c2e-9a7f-3e6d2b1c0a94"],
};

const idempotencyKeyParameter = {
  name: "Idempotency-Key",
  in: "header",
  required: false,
  description: idempotencyKeyDoc.description,
  // No example: Swagger UI would fill it in and send one key with every request it tries.
  schema: { type: "string" as const, minLength: 1, maxLength: 257 },
};

const keyProblems = {
  badKey: {
    code: "VALIDATION_FAILED",
    detail: "Idempotency-Key: must be 1..255 printable ASCII characters (a quoted string counts without its quotes)",
  },
} as const;

const keyReused = {
  422: {
    description: "The Idempotency-Key was used for another request (IDEMPOTENCY_KEY_REUSED)",
    problems: rejectionsWithStatus(422),
  },
};

const scheduleOrder = { code: "VALIDATION_FAILED", detail: "ends_at: must be after starts_at" } as const;

/** POST /api/coupons. */
export const createDocs: DocumentDecoration = {
  summary: "Create a coupon",
  description: [
    "Creates a coupon with `amount` in stock. When the service runs with ADMIN_TOKEN, requires `Authorization: Bearer <token>`.",
    "Optional `starts_at` and `ends_at` (RFC 3339 with an offset) schedule the sale: claims win only from `starts_at` and before `ends_at`, by the database's clock. The answer carries them only when given.",
    "With an `Idempotency-Key`, a retry whose first answer was lost gets that answer again: 201 with the coupon as it was created, or COUPON_EXISTS.",
  ].join("\n\n"),
  // Either no credentials (no ADMIN_TOKEN) or the bearer token: the UI offers Authorize.
  security: [{}, { adminToken: [] }],
  parameters: [idempotencyKeyParameter],
  responses: documentedResponses("/api/coupons", {
    201: {
      description: "Created; Location names the coupon",
      schema: CouponCreated,
      headers: ["Location", "Idempotent-Replayed"],
    },
    400: {
      description: "Invalid body or Idempotency-Key (VALIDATION_FAILED); `detail` names the field",
      problems: {
        amount: { code: "VALIDATION_FAILED", detail: "amount: Expected integer" },
        scheduleOrder,
        malformedJson: commonProblems.malformedJson,
        ...keyProblems,
      },
    },
    ...adminProblems("Creating"),
    409: {
      description: "Name taken (COUPON_EXISTS), or the Idempotency-Key still in use (IDEMPOTENCY_KEY_IN_USE)",
      headers: ["Retry-After", "Idempotent-Replayed"],
      problems: {
        COUPON_EXISTS: { code: "COUPON_EXISTS", detail: detailOf(rejections.coupon_exists, "BLACK_FRIDAY") },
        ...rejectionsWithStatus(409, "key"),
      },
    },
    ...keyReused,
    ...bodyProblems,
    503: {
      description: "Database unavailable or slow, or too many request bodies in flight (SERVICE_UNAVAILABLE)",
      problems: { ...databaseProblems, bodiesInFlight: commonProblems.bodiesInFlight },
    },
  }),
};

/** GET /api/coupons. */
export const listDocs: DocumentDecoration = {
  summary: "List coupons",
  description:
    "Coupons in name order, without their claimers, a page at a time: pass the answer's `next_after` as `after` for the next page (keyset pagination: a page costs the same however deep it is).",
  security: [],
  responses: documentedResponses("/api/coupons", {
    200: { description: "One page of coupons", schema: CouponPage },
    400: {
      description: "Invalid `limit` or `after` (VALIDATION_FAILED)",
      problems: {
        limit: { code: "VALIDATION_FAILED", detail: "limit: must be an integer from 1 to 100" },
      },
    },
    500: { description: "Unexpected failure (INTERNAL_ERROR)", problems: { internal: commonProblems.internal } },
    503: { description: "Database unavailable or slow (SERVICE_UNAVAILABLE)", problems: databaseProblems },
  }),
};

/** PATCH /api/coupons/{name}. */
export const updateDocs: DocumentDecoration = {
  summary: "Schedule, pause or resume a sale",
  description: [
    "Changes `starts_at`, `ends_at` (null clears either) and `active` (false pauses, true resumes). `amount` cannot change. Behind ADMIN_TOKEN like creating.",
    "Every replica is told before the change is made, and it answers about MEMORY_LEASE_MS (0.5 s) later: once it answers, the database decides every claim by the new rules and no replica answers the old ones from memory. The change is made under the coupon's claim lock.",
  ].join("\n\n"),
  security: [{}, { adminToken: [] }],
  responses: documentedResponses("/api/coupons/BLACK_FRIDAY", {
    200: { description: "The coupon as changed", schema: CouponSummary },
    400: {
      description: "Invalid body (VALIDATION_FAILED); `detail` names the field",
      problems: {
        scheduleOrder,
        amount: {
          code: "VALIDATION_FAILED",
          detail: "amount: cannot be changed; a coupon's stock is fixed when it is created",
        },
        empty: { code: "VALIDATION_FAILED", detail: "body: give at least one of starts_at, ends_at, active" },
      },
    },
    ...adminProblems("Changing"),
    404: {
      description: "No such coupon (COUPON_NOT_FOUND)",
      problems: { COUPON_NOT_FOUND: notFound },
    },
    ...bodyProblems,
    503: {
      description: "Database unavailable or slow (SERVICE_UNAVAILABLE)",
      problems: { ...databaseProblems, bodiesInFlight: commonProblems.bodiesInFlight },
    },
  }),
};

/** POST /api/coupons/claim. */
export const claimDocs: DocumentDecoration = {
  summary: "Claim a coupon for a user",
  description: [
    "At most one claim per user per coupon; never more claims than stock; no claim wins while the sale is paused, before `starts_at` or from `ends_at` (the database's clock decides). SALE_NOT_STARTED carries Retry-After: the seconds until the opening.",
    "With an `Idempotency-Key`, a client whose answer was lost (a timeout, a dropped connection) retries with the same key and learns what the first attempt did: the same 201 with the same `claimed_at`, or the same refusal. The key's answer is stored in the transaction that made the claim.",
  ].join("\n\n"),
  security: [],
  parameters: [idempotencyKeyParameter],
  responses: documentedResponses("/api/coupons/claim", {
    201: { description: "Claimed", schema: ClaimCreated, headers: ["Idempotent-Replayed"] },
    400: {
      description: "Invalid body or Idempotency-Key (VALIDATION_FAILED); `detail` names the field",
      problems: {
        user_id: {
          code: "VALIDATION_FAILED",
          detail: 'user_id: must be 1..128 characters with no control characters, and not "." or ".."',
        },
        malformedJson: commonProblems.malformedJson,
        ...keyProblems,
      },
    },
    404: {
      description: `No such coupon (${codesWithStatus(404)})`,
      headers: ["Idempotent-Replayed"],
      problems: rejectionsWithStatus(404),
    },
    409: {
      description: `${codesWithStatus(409)}: the sale's checked in that order (already claimed first, even when sold out); IDEMPOTENCY_KEY_IN_USE before any of them`,
      headers: ["Retry-After", "Idempotent-Replayed"],
      problems: rejectionsWithStatus(409),
    },
    ...keyReused,
    ...bodyProblems,
    503: {
      description: `Overloaded, expired in the queue or not confirmed (${codesWithStatus(503)}); safe to retry`,
      problems: { ...rejectionsWithStatus(503), bodiesInFlight: commonProblems.bodiesInFlight },
    },
  }),
};

/** DELETE /api/coupons/{name}/claims/{user_id}. */
export const releaseDocs: DocumentDecoration = {
  summary: "Release a user's claim back to stock",
  description: [
    "Deletes the claim, gives its unit back to stock (whatever the sale's state) and lets the user claim again; a new claim goes to the end of `claimed_by`. The release is kept in the `claim_releases` table. Behind ADMIN_TOKEN like creating.",
    "Decided in the coupon's queue and under its lock like the claims that arrived around it, in arrival order. Every replica is told before the release is made, and it answers about MEMORY_LEASE_MS (0.5 s) later: once it answers, no replica answers SOLD_OUT from memory.",
    "With an `Idempotency-Key`, a retry gets the first answer again (the same `released_at` and `remaining_amount`) instead of CLAIM_NOT_FOUND.",
  ].join("\n\n"),
  security: [{}, { adminToken: [] }],
  responses: documentedResponses("/api/coupons/BLACK_FRIDAY/claims/user-42", {
    200: { description: "Released", schema: ClaimReleased, headers: ["Idempotent-Replayed"] },
    400: {
      description: "Invalid name, user id, percent-encoding or Idempotency-Key (VALIDATION_FAILED)",
      problems: {
        percentEncoding: {
          code: "VALIDATION_FAILED",
          detail: "path: invalid percent-encoding (expected UTF-8, e.g. %C3%A9).",
        },
        ...keyProblems,
      },
    },
    ...adminProblems("Changing"),
    404: {
      description: `No such coupon, or the user holds no claim on it (${codesWithStatus(404, "release")})`,
      headers: ["Idempotent-Replayed"],
      problems: rejectionsWithStatus(404, "release"),
    },
    409: {
      description: `The Idempotency-Key still in use (${codesWithStatus(409, "release")})`,
      headers: ["Retry-After"],
      problems: rejectionsWithStatus(409, "release"),
    },
    ...keyReused,
    500: { description: "Unexpected failure (INTERNAL_ERROR)", problems: { internal: commonProblems.internal } },
    503: {
      description: `Overloaded, expired in the queue or not confirmed (${codesWithStatus(503, "release")}); safe to retry`,
      problems: rejectionsWithStatus(503, "release"),
    },
  }),
};

/** GET /api/coupons/{name}/claims/{user_id}. */
export const heldDocs: DocumentDecoration = {
  summary: "Does this user hold this coupon?",
  description: [
    "The user's claim on the coupon: when it was made and its `seq`, its place among the coupon's winning claims. One index lookup whatever the coupon's size, always answered by the database: a claim released since is CLAIM_NOT_FOUND, with the release's time in `detail`.",
    "A checkout spending a coupon asks here at that moment, or verifies the claim's signed `receipt` offline (GET /.well-known/jwks.json); a receipt cannot know of a later release.",
  ].join("\n\n"),
  security: [],
  responses: documentedResponses("/api/coupons/BLACK_FRIDAY/claims/user-42", {
    200: { description: "The user holds it", schema: HeldClaim },
    400: {
      description: "Invalid name, user id or percent-encoding (VALIDATION_FAILED)",
      problems: {
        percentEncoding: {
          code: "VALIDATION_FAILED",
          detail: "path: invalid percent-encoding (expected UTF-8, e.g. %C3%A9).",
        },
      },
    },
    404: {
      description: "No such coupon (COUPON_NOT_FOUND), or the user holds no claim on it (CLAIM_NOT_FOUND)",
      problems: {
        COUPON_NOT_FOUND: notFound,
        CLAIM_NOT_FOUND: { code: "CLAIM_NOT_FOUND", detail: claimNotHeld().message },
        released: { code: "CLAIM_NOT_FOUND", detail: claimNotHeld(new Date("2026-11-27T09:05:00.000Z")).message },
      },
    },
    500: { description: "Unexpected failure (INTERNAL_ERROR)", problems: { internal: commonProblems.internal } },
    503: {
      description: "Database unavailable or slow (SERVICE_UNAVAILABLE)",
      problems: databaseProblems,
    },
  }),
};

/** GET /api/coupons/{name}. */
export const readDocs: DocumentDecoration = {
  summary: "Read a coupon",
  description:
    "Stock and the user ids that claimed it, in claim order; `starts_at`, `ends_at` and `active: false` appear only on a coupon that uses them.",
  security: [],
  responses: documentedResponses("/api/coupons/BLACK_FRIDAY", {
    200: { description: "The coupon", schema: CouponDetails },
    400: {
      description: "Invalid name or percent-encoding (VALIDATION_FAILED)",
      problems: {
        percentEncoding: {
          code: "VALIDATION_FAILED",
          detail: "path: invalid percent-encoding (expected UTF-8, e.g. %C3%A9).",
        },
      },
    },
    404: {
      description: "No such coupon (COUPON_NOT_FOUND)",
      problems: { COUPON_NOT_FOUND: notFound },
    },
    500: {
      description: "Unexpected failure (INTERNAL_ERROR)",
      problems: { internal: commonProblems.internal },
    },
    503: {
      description: "Database unavailable or slow, or too many big reads at once (SERVICE_UNAVAILABLE)",
      problems: {
        databaseUnavailable: commonProblems.databaseUnavailable,
        readTooSlow,
        readsInFlight,
      },
    },
  }),
};
