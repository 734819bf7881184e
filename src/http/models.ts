// The shapes of the coupon API, as TypeBox schemas: the routes validate with them and the OpenAPI
// document is generated from them, so the docs cannot drift from what is enforced.
import { Type } from "@sinclair/typebox";
import { t } from "elysia";
import { validationMessage } from "./problems";
import { INSTANT_PATTERN } from "./schedule";

// 1..128 UTF-16 code units with no control characters (C0, DEL, C1) and no unpaired surrogate halves,
// which PostgreSQL's UTF-8 text could not store verbatim. "." and ".." are refused too: URL path
// normalisation turns /api/coupons/. into another path, so such a coupon could never be read back.
const NAME_PATTERN =
  "^(?!\\.\\.?$)(?:[^\\u0000-\\u001F\\u007F-\\u009F\\uD800-\\uDFFF]|[\\uD800-\\uDBFF][\\uDC00-\\uDFFF])*$";
const Name = (description: string, example: string) =>
  t.String({
    minLength: 1,
    maxLength: 128,
    pattern: NAME_PATTERN,
    description,
    examples: [example],
    [validationMessage]: 'must be 1..128 characters with no control characters, and not "." or ".."',
  });

export const CouponName = Name("Coupon name: 1..128 characters, no control characters", "BLACK_FRIDAY");
export const UserId = Name("User id: 1..128 characters, no control characters", "user-42");

// TypeBox's own Integer: Elysia's t.Integer would accept the string "10"; the contract says integer.
const Amount = Type.Integer({ minimum: 1, maximum: 2_147_483_647, description: "Stock", examples: [100] });

const Instant = (description: string, example: string) =>
  t.String({
    pattern: INSTANT_PATTERN,
    description,
    examples: [example],
    [validationMessage]: "must be an RFC 3339 date-time with an offset, e.g. 2026-11-27T09:00:00Z",
  });
const opens = "The sale opens at this instant, by the database's clock";
const closes = "The sale closes at this instant (after starts_at)";
const StartsAt = (description = opens) => Instant(description, "2026-11-27T09:00:00Z");
const EndsAt = (description = closes) => Instant(description, "2026-11-27T21:00:00+01:00");
/** A bound PATCH may also clear: an instant, or null. */
const Clearable = (instant: ReturnType<typeof Instant>) =>
  t.Union([instant, t.Null()], {
    [validationMessage]: "must be an RFC 3339 date-time with an offset, e.g. 2026-11-27T09:00:00Z, or null",
  });

export const CreateCouponBody = t.Object(
  { name: CouponName, amount: Amount, starts_at: t.Optional(StartsAt()), ends_at: t.Optional(EndsAt()) },
  {
    examples: [
      { name: "BLACK_FRIDAY", amount: 100 },
      { name: "CYBER_MONDAY", amount: 500, starts_at: "2026-11-30T09:00:00Z", ends_at: "2026-11-30T21:00:00Z" },
    ],
  },
);

export const UpdateCouponBody = t.Object(
  {
    starts_at: t.Optional(Clearable(StartsAt(`${opens}; null: no opening bound`))),
    ends_at: t.Optional(Clearable(EndsAt(`${closes}; null: never closes`))),
    active: t.Optional(t.Boolean({ description: "false pauses the sale, true resumes it" })),
  },
  {
    // A typo or a field that cannot change (amount) is refused, never silently ignored.
    additionalProperties: false,
    examples: [{ active: false }, { starts_at: "2026-11-27T10:00:00Z", ends_at: null }],
  },
);

export const ClaimBody = t.Object(
  { user_id: UserId, coupon_name: CouponName },
  { examples: [{ user_id: "user-42", coupon_name: "BLACK_FRIDAY" }] },
);

// The answers below are documented, not validated, so TypeBox's Integer (plain "integer" in the
// document) rather than Elysia's t.Integer, which documents itself as "integer or numeric string".
// The sale keys a coupon's answers carry only when it uses them; a plain coupon answers as it always has.
const saleKeys = {
  starts_at: t.Optional(t.String({ format: "date-time", description: "Present when the sale has an opening" })),
  ends_at: t.Optional(t.String({ format: "date-time", description: "Present when the sale has a closing" })),
  active: t.Optional(t.Literal(false, { description: "Present (false) only while the sale is paused" })),
};

export const CouponCreated = t.Object(
  { name: t.String(), amount: Type.Integer(), remaining_amount: Type.Integer(), ...saleKeys },
  { examples: [{ name: "BLACK_FRIDAY", amount: 100, remaining_amount: 100 }] },
);

/** A coupon without its claimers: PATCH's answer and each item of the list. */
export const CouponSummary = t.Object(
  { name: t.String(), amount: Type.Integer(), remaining_amount: Type.Integer(), ...saleKeys },
  {
    examples: [
      { name: "BLACK_FRIDAY", amount: 100, remaining_amount: 40, starts_at: "2026-11-27T09:00:00.000Z", active: false },
    ],
  },
);

export const CouponPage = t.Object(
  {
    coupons: t.Array(CouponSummary, { description: "In name order" }),
    next_after: t.Union([t.String(), t.Null()], {
      description: "Pass as `after` for the next page; null on the last page",
    }),
  },
  {
    examples: [{ coupons: [{ name: "BLACK_FRIDAY", amount: 100, remaining_amount: 99 }], next_after: "BLACK_FRIDAY" }],
  },
);

// limit as a pattern-checked string: query values are strings, and TypeBox's coercion of an integer
// reports a failure without the field's name.
export const ListQuery = t.Object({
  limit: t.Optional(
    t.String({
      pattern: "^(100|[1-9][0-9]?)$",
      description: "Coupons per page, an integer from 1 to 100 (default 20)",
      examples: ["20"],
      [validationMessage]: "must be an integer from 1 to 100",
    }),
  ),
  after: t.Optional({ ...CouponName, description: "`next_after` of the previous page" }),
});

const Seq = Type.Integer({
  minimum: 1,
  description:
    "The claim's place among the coupon's winning claims: 1 for the first, in the order they were decided; never reused (a claim after a release gets the next)",
});

export const ClaimCreated = t.Object(
  {
    user_id: t.String(),
    coupon_name: t.String(),
    claimed_at: t.String({ format: "date-time" }),
    seq: Seq,
    receipt: t.Optional(
      t.String({
        description:
          "When the service signs receipts: a compact JWS (EdDSA, Ed25519) over {iss, sub: user_id, coupon, seq, iat: claimed_at, jti} (and exp with RECEIPT_TTL), verifiable offline with GET /.well-known/jwks.json",
      }),
    ),
  },
  {
    examples: [
      {
        user_id: "user-42",
        coupon_name: "BLACK_FRIDAY",
        claimed_at: "2026-11-27T09:00:00.123Z",
        seq: 1,
        receipt:
          "eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCIsImtpZCI6IjIwMjYtMTIifQ.eyJpc3MiOiJjb3Vwb24tc2VydmljZSIsInN1YiI6InVzZXItNDIiLCJjb3Vwb24iOiJCTEFDS19GUklEQVkiLCJzZXEiOjEsImlhdCI6MTc5NTc3MzYwMCwianRpIjoiLi4uIn0.c2lnbmF0dXJl",
      },
    ],
  },
);

export const HeldClaim = t.Object(
  { coupon_name: t.String(), user_id: t.String(), claimed_at: t.String({ format: "date-time" }), seq: Seq },
  { examples: [{ coupon_name: "BLACK_FRIDAY", user_id: "user-42", claimed_at: "2026-11-27T09:00:00.123Z", seq: 1 }] },
);

export const CouponDetails = t.Object(
  {
    name: t.String(),
    amount: Type.Integer(),
    remaining_amount: Type.Integer(),
    ...saleKeys,
    claimed_by: t.Array(t.String(), { description: "User ids in claim order" }),
  },
  { examples: [{ name: "BLACK_FRIDAY", amount: 100, remaining_amount: 99, claimed_by: ["user-42"] }] },
);

export const CouponParams = t.Object({ name: CouponName });

/**
 * A route's Idempotency-Key as a header schema, for the route whose path parameters keep the OpenAPI
 * plugin from taking it as a documented parameter; checked by idempotencyKey() like the others (no
 * length bounds here, whose refusal would read differently from theirs).
 */
export const IdempotencyHeaders = (doc: { description: string }) =>
  t.Object({ "idempotency-key": t.Optional(t.String({ ...doc })) });
export const ClaimParams = t.Object({ name: CouponName, user_id: UserId });

export const ClaimReleased = t.Object(
  {
    coupon_name: t.String(),
    user_id: t.String(),
    released_at: t.String({ format: "date-time" }),
    remaining_amount: Type.Integer({ description: "The coupon's stock right after this release" }),
  },
  {
    examples: [
      {
        coupon_name: "BLACK_FRIDAY",
        user_id: "user-42",
        released_at: "2026-11-27T09:05:00.000Z",
        remaining_amount: 1,
      },
    ],
  },
);

export type CouponDetails = typeof CouponDetails.static;
export type CouponCreated = typeof CouponCreated.static;
export type CouponSummary = typeof CouponSummary.static;
export type CouponPage = typeof CouponPage.static;
