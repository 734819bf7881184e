// The shapes of the coupon API, as TypeBox schemas: the routes validate with them and the OpenAPI
// document is generated from them, so the docs cannot drift from what is enforced.
import { Type } from "@sinclair/typebox";
import { t } from "elysia";
import { validationMessage } from "../http/problems";

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

export const CreateCouponBody = t.Object(
  { name: CouponName, amount: Amount },
  { examples: [{ name: "BLACK_FRIDAY", amount: 100 }] },
);

export const ClaimBody = t.Object(
  { user_id: UserId, coupon_name: CouponName },
  { examples: [{ user_id: "user-42", coupon_name: "BLACK_FRIDAY" }] },
);

// The answers below are documented, not validated, so TypeBox's Integer (plain "integer" in the
// document) rather than Elysia's t.Integer, which documents itself as "integer or numeric string".
export const CouponCreated = t.Object(
  { name: t.String(), amount: Type.Integer(), remaining_amount: Type.Integer() },
  { examples: [{ name: "BLACK_FRIDAY", amount: 100, remaining_amount: 100 }] },
);

export const ClaimCreated = t.Object(
  { user_id: t.String(), coupon_name: t.String(), claimed_at: t.String({ format: "date-time" }) },
  { examples: [{ user_id: "user-42", coupon_name: "BLACK_FRIDAY", claimed_at: "2026-11-27T09:00:00.123Z" }] },
);

export const CouponDetails = t.Object(
  {
    name: t.String(),
    amount: Type.Integer(),
    remaining_amount: Type.Integer(),
    claimed_by: t.Array(t.String(), { description: "User ids in claim order" }),
  },
  { examples: [{ name: "BLACK_FRIDAY", amount: 100, remaining_amount: 99, claimed_by: ["user-42"] }] },
);

export const CouponParams = t.Object({ name: CouponName });

export type CouponDetails = typeof CouponDetails.static;
export type CouponCreated = typeof CouponCreated.static;
