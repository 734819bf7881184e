// The sale's schedule as the API speaks it (src/http/schedule.ts): RFC 3339 instants in, with every
// field range checked; the order of the bounds; what a PATCH body may change; and the answer keys that
// appear only on a coupon that uses them.
import { describe, expect, it } from "bun:test";
import { saleFields } from "../../src/domain/coupon";
import { AppError } from "../../src/domain/errors";
import { parseChange, parseInstant, parseSchedule, refuseUnknownFields } from "../../src/http/schedule";

/** The AppError `run` throws, as code and message; fails the test when it throws nothing else. */
function refusal(run: () => unknown): { code: string; message: string } {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(AppError);
    return { code: (error as AppError).code, message: (error as AppError).message };
  }
  throw new Error("expected a refusal, but nothing was thrown");
}

const invalid = (field: string) => ({
  code: "VALIDATION_FAILED",
  message: `${field}: not a valid date-time (expected e.g. 2026-11-27T09:00:00Z)`,
});
const iso = (date: Date | null | undefined) => date?.toISOString();

describe("parseInstant", () => {
  it.each([
    ["2026-11-27T09:00:00Z", "2026-11-27T09:00:00.000Z"],
    ["2026-11-27t09:00:00z", "2026-11-27T09:00:00.000Z"],
    ["2026-11-27T10:00:00+01:00", "2026-11-27T09:00:00.000Z"],
    ["2026-11-27T03:30:00-05:30", "2026-11-27T09:00:00.000Z"],
    ["2026-11-27T09:00:00+00:00", "2026-11-27T09:00:00.000Z"],
    ["2026-11-27T09:00:00-00:00", "2026-11-27T09:00:00.000Z"],
    ["2026-11-27T09:00:00+23:59", "2026-11-26T09:01:00.000Z"],
    ["2026-11-27T09:00:00-23:59", "2026-11-28T08:59:00.000Z"],
    ["2026-12-31T23:30:00-01:00", "2027-01-01T00:30:00.000Z"],
    ["2027-01-01T00:30:00+01:00", "2026-12-31T23:30:00.000Z"],
    ["1970-01-01T00:00:00Z", "1970-01-01T00:00:00.000Z"],
    ["9999-12-31T23:59:59Z", "9999-12-31T23:59:59.000Z"],
  ])("reads %s as %s", (value, expected) => {
    expect(iso(parseInstant("starts_at", value))).toBe(expected);
  });

  it.each([
    [".5", ".500"],
    [".1", ".100"],
    [".12", ".120"],
    [".123", ".123"],
    [".123999", ".123"],
    [".9999999", ".999"],
    [".000000001", ".000"],
  ])("truncates the fraction %s to %s milliseconds, never rounding up", (fraction, ms) => {
    expect(iso(parseInstant("starts_at", `2026-12-31T23:59:59${fraction}Z`))).toBe(`2026-12-31T23:59:59${ms}Z`);
    expect(iso(parseInstant("starts_at", `2026-12-31T23:59:59${fraction}+01:00`))).toBe(`2026-12-31T22:59:59${ms}Z`);
  });

  it.each([
    ["2024-02-29", "divisible by 4"],
    ["2000-02-29", "divisible by 400"],
    ["2028-02-29", "divisible by 4"],
  ])("accepts February 29 of the leap year in %s (%s)", (date) => {
    expect(iso(parseInstant("starts_at", `${date}T12:00:00Z`))).toBe(`${date}T12:00:00.000Z`);
  });

  it.each([
    ["February 29 of a common year", "2026-02-29T00:00:00Z"],
    ["February 29 of a century that is not a leap year", "1900-02-29T00:00:00Z"],
    ["February 30", "2028-02-30T00:00:00Z"],
    ["April 31", "2026-04-31T00:00:00Z"],
    ["day 00", "2026-11-00T00:00:00Z"],
    ["day 32", "2026-12-32T00:00:00Z"],
    ["month 00", "2026-00-10T00:00:00Z"],
    ["month 13", "2026-13-10T00:00:00Z"],
    ["hour 24", "2026-11-27T24:00:00Z"],
    ["minute 60", "2026-11-27T23:60:00Z"],
    ["second 60 (a leap second)", "2016-12-31T23:59:60Z"],
    ["an offset of +24:00", "2026-11-27T09:00:00+24:00"],
    ["an offset of -24:00", "2026-11-27T09:00:00-24:00"],
    ["an offset of +99:00", "2026-11-27T09:00:00+99:00"],
    ["an offset minute of 60", "2026-11-27T09:00:00+01:60"],
  ])("refuses %s", (_label, value) => {
    expect(refusal(() => parseInstant("ends_at", value))).toEqual(invalid("ends_at"));
  });

  it.each([
    ["no offset", "2026-11-27T09:00:00"],
    ["an offset without its colon", "2026-11-27T09:00:00+0100"],
    ["an offset of hours only", "2026-11-27T09:00:00+01"],
    ["a date only", "2026-11-27"],
    ["no seconds", "2026-11-27T09:00Z"],
    ["a one-digit hour", "2026-11-27T9:00:00Z"],
    ["a space for the T", "2026-11-27 09:00:00Z"],
    ["a dot without digits", "2026-11-27T09:00:00.Z"],
    ["a comma for the dot", "2026-11-27T09:00:00,5Z"],
    ["a leading space", " 2026-11-27T09:00:00Z"],
    ["a trailing newline", "2026-11-27T09:00:00Z\n"],
    ["a five-digit year", "+02026-11-27T09:00:00Z"],
    ["the empty string", ""],
  ])("refuses %s: not RFC 3339", (_label, value) => {
    expect(refusal(() => parseInstant("starts_at", value))).toEqual(invalid("starts_at"));
  });
});

describe("parseInstant at the edges of four-digit years", () => {
  it("keeps the years 0001..0099 as written (Date.UTC would read them as 19xx)", () => {
    expect(parseInstant("starts_at", "0050-01-01T00:00:00Z").toISOString()).toBe("0050-01-01T00:00:00.000Z");
    expect(parseInstant("starts_at", "0004-02-29T12:00:00Z").toISOString()).toBe("0004-02-29T12:00:00.000Z");
  });

  it.each(["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+00:01", "0000-06-01T00:00:00Z"])(
    "refuses %s, which falls outside 0001..9999 in UTC",
    (value) => {
      expect(() => parseInstant("ends_at", value)).toThrow("ends_at: must fall within the years 0001 to 9999 in UTC");
    },
  );
});

describe("parseSchedule", () => {
  it("schedules nothing when given no bound, with no key left undefined", () => {
    expect(Object.keys(parseSchedule({}))).toEqual([]);
  });

  it("gives only the bound it was given", () => {
    const opening = parseSchedule({ starts_at: "2026-11-27T09:00:00Z" });
    expect(Object.keys(opening)).toEqual(["startsAt"]);
    expect(iso(opening.startsAt)).toBe("2026-11-27T09:00:00.000Z");
    const closing = parseSchedule({ ends_at: "2026-11-27T09:00:00Z" });
    expect(Object.keys(closing)).toEqual(["endsAt"]);
  });

  it("accepts ends_at one millisecond after starts_at", () => {
    const schedule = parseSchedule({ starts_at: "2026-11-27T09:00:00Z", ends_at: "2026-11-27T09:00:00.001Z" });
    expect([iso(schedule.startsAt), iso(schedule.endsAt)]).toEqual([
      "2026-11-27T09:00:00.000Z",
      "2026-11-27T09:00:00.001Z",
    ]);
  });

  it.each([
    ["before starts_at", "2026-11-27T09:00:00Z", "2026-11-27T08:59:59.999Z"],
    ["at starts_at", "2026-11-27T09:00:00Z", "2026-11-27T09:00:00Z"],
    ["at starts_at in another offset", "2026-11-27T10:00:00+01:00", "2026-11-27T09:00:00Z"],
    ["within the same millisecond, once truncated", "2026-11-27T09:00:00.1231Z", "2026-11-27T09:00:00.1239Z"],
  ])("refuses ends_at %s", (_label, starts_at, ends_at) => {
    expect(refusal(() => parseSchedule({ starts_at, ends_at }))).toEqual({
      code: "VALIDATION_FAILED",
      message: "ends_at: must be after starts_at",
    });
  });

  it("names the field that is not a date-time, starts_at first", () => {
    expect(refusal(() => parseSchedule({ ends_at: "2026-02-30T00:00:00Z" }))).toEqual(invalid("ends_at"));
    expect(refusal(() => parseSchedule({ starts_at: "soon", ends_at: "later" }))).toEqual(invalid("starts_at"));
  });
});

describe("parseChange", () => {
  it("refuses a body that changes nothing", () => {
    expect(refusal(() => parseChange({}))).toEqual({
      code: "VALIDATION_FAILED",
      message: "body: give at least one of starts_at, ends_at, active",
    });
  });

  it.each([false, true])("changes active to %p and nothing else", (active) => {
    expect(parseChange({ active })).toEqual({ active });
    expect(Object.keys(parseChange({ active }))).toEqual(["active"]);
  });

  it("clears a bound with null, keeping the other out of the change", () => {
    const change = parseChange({ starts_at: null });
    expect(change).toEqual({ startsAt: null });
    expect("endsAt" in change).toBe(false);
    expect(parseChange({ ends_at: null, active: false })).toEqual({ endsAt: null, active: false });
  });

  it("reads new bounds as instants, leaving the order against a cleared bound to the stored row", () => {
    const change = parseChange({ starts_at: "2026-11-27T10:00:00+01:00", ends_at: null });
    expect(iso(change.startsAt)).toBe("2026-11-27T09:00:00.000Z");
    expect(change.endsAt).toBeNull();
  });

  it.each([
    ["before", "2026-11-27T08:00:00Z"],
    ["at", "2026-11-27T09:00:00Z"],
  ])("refuses ends_at %s starts_at when both are given", (_label, ends_at) => {
    expect(refusal(() => parseChange({ starts_at: "2026-11-27T09:00:00Z", ends_at }))).toEqual({
      code: "VALIDATION_FAILED",
      message: "ends_at: must be after starts_at",
    });
  });

  it("names the bound that is not a date-time", () => {
    expect(refusal(() => parseChange({ ends_at: "2026-11-27T24:00:00Z" }))).toEqual(invalid("ends_at"));
    expect(refusal(() => parseChange({ starts_at: "2026-11-27", active: true }))).toEqual(invalid("starts_at"));
  });
});

describe("refuseUnknownFields", () => {
  it.each([
    ["an empty object", {}],
    ["every changeable field", { starts_at: null, ends_at: null, active: true }],
    ["a JSON array", [1]],
    ["null", null],
    ["a string", "active"],
    ["a number", 5],
  ])("lets %s through for validation to judge", (_label, body) => {
    expect(() => refuseUnknownFields(body)).not.toThrow();
  });

  it("refuses amount, saying a coupon's stock is fixed, even beside a valid change", () => {
    const amount = {
      code: "VALIDATION_FAILED",
      message: "amount: cannot be changed; a coupon's stock is fixed when it is created",
    };
    expect(refusal(() => refuseUnknownFields({ amount: 10 }))).toEqual(amount);
    expect(refusal(() => refuseUnknownFields({ active: false, amount: 10 }))).toEqual(amount);
  });

  it.each([
    ["a typo", { activ: false }, "activ"],
    ["the name", { name: "OTHER" }, "name"],
    ["remaining_amount", { remaining_amount: 5 }, "remaining_amount"],
    ["the first of several", { zeta: 1, amount: 2 }, "zeta"],
    ["__proto__ as JSON.parse leaves it", JSON.parse('{"__proto__": {"active": false}}'), "__proto__"],
  ])("refuses %s, naming the field and what may change", (_label, body, field) => {
    expect(refusal(() => refuseUnknownFields(body))).toEqual({
      code: "VALIDATION_FAILED",
      message: `${field}: unknown field (a PATCH may change starts_at, ends_at, active)`,
    });
  });
});

describe("saleFields", () => {
  it("adds no key at all to a coupon with no schedule that is not paused", () => {
    expect(Object.keys(saleFields({ starts_at: null, ends_at: null, active: true }))).toEqual([]);
  });

  it("answers each bound used in UTC with milliseconds, and active only as false", () => {
    const fields = saleFields({
      starts_at: new Date("2026-11-27T10:00:00+01:00"),
      ends_at: new Date("2026-11-27T21:00:00.5Z"),
      active: false,
    });
    expect(fields).toEqual({
      starts_at: "2026-11-27T09:00:00.000Z",
      ends_at: "2026-11-27T21:00:00.500Z",
      active: false,
    });
    expect(Object.keys(fields)).toEqual(["starts_at", "ends_at", "active"]);
    expect(saleFields({ starts_at: null, ends_at: new Date(0), active: true })).toEqual({
      ends_at: "1970-01-01T00:00:00.000Z",
    });
  });

  it.each([
    ["2026-11-27 09:00:00.123456+00", "2026-11-27T09:00:00.123Z"],
    ["2026-11-27 10:00:00+01", "2026-11-27T09:00:00.000Z"],
    ["2026-11-27T09:00:00.000Z", "2026-11-27T09:00:00.000Z"],
  ])("reads the column as a driver may give it, the text %p, as %s", (text, expected) => {
    expect(saleFields({ starts_at: text, ends_at: null, active: true })).toEqual({ starts_at: expected });
  });
});
