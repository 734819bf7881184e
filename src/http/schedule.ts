// A sale's schedule and pause as requests give them: RFC 3339 instants with an offset, checked field by
// field (domain/coupon.ts renders them back, as ISO 8601 UTC).
import type { SaleChange, Schedule } from "../domain/coupon";
import { AppError } from "../domain/errors";

// Date-time with a mandatory offset (RFC 3339 section 5.6); the ranges are checked by parseInstant.
export const INSTANT_PATTERN =
  "^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$";
const INSTANT = new RegExp(INSTANT_PATTERN);

/** The epoch-ms instant `value` names; VALIDATION_FAILED naming `field` unless it is a real date-time. */
export function parseInstant(field: string, value: string): Date {
  const invalid = () =>
    new AppError("VALIDATION_FAILED", `${field}: not a valid date-time (expected e.g. 2026-11-27T09:00:00Z)`);
  if (!INSTANT.test(value)) throw invalid();
  const [y, mo, d, h, mi, s] = [0, 5, 8, 11, 14, 17].map((at) => Number(value.slice(at, at + (at ? 2 : 4))));
  const fraction = /\.([0-9]+)/.exec(value.slice(19))?.[1] ?? "";
  const zone = value.slice(19 + (fraction ? fraction.length + 1 : 0));
  const offsetMin = /^[Zz]$/.test(zone)
    ? 0
    : (zone[0] === "-" ? -1 : 1) * (Number(zone.slice(1, 3)) * 60 + Number(zone.slice(4, 6)));
  // setUTCFullYear, not Date.UTC, which reads the years 0..99 as 1900..1999.
  const back = new Date(0);
  back.setUTCFullYear(y as number, (mo as number) - 1, d);
  back.setUTCHours(h as number, mi, s, Number(fraction.slice(0, 3).padEnd(3, "0")));
  // 2026-02-30 rolls over to March: a date that does not come back unchanged does not exist.
  const real = back.getUTCMonth() === (mo as number) - 1 && back.getUTCDate() === d && (h as number) < 24;
  if (
    !real ||
    (mi as number) > 59 ||
    (s as number) > 59 ||
    Math.abs(offsetMin) >= 24 * 60 ||
    Number(zone.slice(4, 6)) > 59
  )
    throw invalid();
  const instant = new Date(back.getTime() - offsetMin * 60_000);
  // Answers give instants in UTC as RFC 3339, which has four-digit years only.
  const year = instant.getUTCFullYear();
  if (year < 1 || year > 9999)
    throw new AppError("VALIDATION_FAILED", `${field}: must fall within the years 0001 to 9999 in UTC`);
  return instant;
}

/** Bounds as given (null clears one); VALIDATION_FAILED unless ends_at is after starts_at when both are. */
function parseBounds(body: { starts_at?: string | null; ends_at?: string | null }): {
  startsAt?: Date | null;
  endsAt?: Date | null;
} {
  const bound = (field: "starts_at" | "ends_at") => {
    const value = body[field];
    return value === undefined || value === null ? value : parseInstant(field, value);
  };
  const startsAt = bound("starts_at");
  const endsAt = bound("ends_at");
  if (startsAt && endsAt && endsAt <= startsAt)
    throw new AppError("VALIDATION_FAILED", "ends_at: must be after starts_at");
  return { ...(startsAt !== undefined ? { startsAt } : {}), ...(endsAt !== undefined ? { endsAt } : {}) };
}

/** The schedule given at creation; VALIDATION_FAILED unless ends_at is after starts_at. */
export function parseSchedule(body: { starts_at?: string; ends_at?: string }): Schedule {
  return parseBounds(body) as Schedule; // no null: the create body has none
}

const CHANGEABLE = ["starts_at", "ends_at", "active"];

/** VALIDATION_FAILED naming the first field of a PATCH body that cannot be changed (amount) or is unknown. */
export function refuseUnknownFields(body: unknown): void {
  if (typeof body !== "object" || body === null || Array.isArray(body)) return; // validation will say
  const field = Object.keys(body).find((key) => !CHANGEABLE.includes(key));
  if (field === "amount")
    throw new AppError("VALIDATION_FAILED", "amount: cannot be changed; a coupon's stock is fixed when it is created");
  if (field !== undefined)
    throw new AppError("VALIDATION_FAILED", `${field}: unknown field (a PATCH may change ${CHANGEABLE.join(", ")})`);
}

/** A PATCH body as a change; VALIDATION_FAILED when nothing would change or the bounds are out of order. */
export function parseChange(body: {
  starts_at?: string | null;
  ends_at?: string | null;
  active?: boolean;
}): SaleChange {
  const change: SaleChange = parseBounds(body);
  if (body.active !== undefined) change.active = body.active;
  if (Object.keys(change).length === 0)
    throw new AppError("VALIDATION_FAILED", "body: give at least one of starts_at, ends_at, active");
  return change;
}
