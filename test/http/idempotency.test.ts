// The Idempotency-Key header: its parsing, and the fingerprint that pins it to its request.
import { describe, expect, it } from "bun:test";
import { AppError } from "../../src/domain/errors";
import { fingerprint, idempotencyKey } from "../../src/http/idempotency";

const KEY_RULE =
  "Idempotency-Key: must be 1..255 printable ASCII characters (a quoted string counts without its quotes)";

/** The error idempotencyKey throws for `header`, or undefined when it throws none. */
function refusal(header: string): unknown {
  try {
    idempotencyKey(header);
  } catch (error) {
    return error;
  }
  return undefined;
}

describe("idempotencyKey", () => {
  it("answers undefined without the header", () => {
    expect(idempotencyKey(null)).toBeUndefined();
    expect(idempotencyKey(undefined)).toBeUndefined();
  });

  it("takes a bare value as it is, quotes and backslashes inside included", () => {
    expect(idempotencyKey("order-42")).toBe("order-42");
    expect(idempotencyKey("8e03978e-40d5-43e8-bc93-6894a57f9324")).toBe("8e03978e-40d5-43e8-bc93-6894a57f9324");
    expect(idempotencyKey('a"b\\c')).toBe('a"b\\c');
    expect(idempotencyKey(" padded ")).toBe(" padded ");
  });

  it('takes a quoted structured-field string without its quotes, with \\" and \\\\ unescaped', () => {
    expect(idempotencyKey('"order-42"')).toBe("order-42");
    expect(idempotencyKey('"say \\"hi\\""')).toBe('say "hi"');
    expect(idempotencyKey('"\\\\\\""')).toBe('\\"');
    expect(idempotencyKey('"a\\\\\\"b"')).toBe('a\\"b');
  });

  it("takes an escaped backslash anywhere in a quoted string", () => {
    expect(idempotencyKey('"C:\\\\keys"')).toBe("C:\\keys");
    expect(idempotencyKey('"\\\\"')).toBe("\\");
    expect(idempotencyKey('"a\\\\"')).toBe("a\\");
  });

  it("counts the length of a quoted string without its quotes: 255 characters inside pass, 256 do not", () => {
    expect(idempotencyKey(`"${"k".repeat(255)}"`)).toBe("k".repeat(255));
    expect(refusal(`"${"k".repeat(256)}"`)).toBeInstanceOf(AppError);
  });

  it("accepts 255 characters and refuses 256", () => {
    expect(idempotencyKey("k".repeat(255))).toBe("k".repeat(255));
    expect(refusal("k".repeat(256))).toBeInstanceOf(AppError);
  });

  it.each([
    ["empty", ""],
    ["an empty quoted string", '""'],
    ["256 characters", "x".repeat(256)],
    ["all spaces", "   "],
    ["a quoted string of spaces", '"  "'],
    ["non-ASCII", "clé"],
    ["an emoji", "key-🔑"],
    ["a tab", "a\tb"],
    ["a newline", "a\nb"],
    ["NUL", "a\u0000b"],
    ["DEL", "a\u007fb"],
    ["an unknown escape in a quoted string", '"a\\nb"'],
    ["a lone quote inside a quoted string", '"a"b"'],
    ["a trailing backslash inside a quoted string", '"ab\\"'],
    ["an escaped backslash then a lone quote", '"a\\\\"b"'],
    ["a control character inside a quoted string", '"a\u0001b"'],
  ])("refuses %s with VALIDATION_FAILED and the rule as detail", (_, header) => {
    const error = refusal(header);
    expect(error).toBeInstanceOf(AppError);
    expect({ code: (error as AppError).code, detail: (error as AppError).message }).toEqual({
      code: "VALIDATION_FAILED",
      detail: KEY_RULE,
    });
  });
});

describe("fingerprint", () => {
  const CREATE = "POST /api/coupons";
  const base = ["spring", 100, new Date("2026-03-01T09:00:00Z"), null] as const;

  it("is stable: the same route and equal fields give the same URL-safe SHA-256", () => {
    const once = fingerprint(CREATE, base);
    expect(fingerprint(CREATE, ["spring", 100, new Date("2026-03-01T09:00:00.000Z"), null])).toBe(once);
    expect(once).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });

  it("differs by route for the same fields (keys are global, not per route)", () => {
    const fields = ["spring", "user-1"];
    const prints = ["POST /api/coupons/claim", "DELETE /api/coupons/{name}/claims/{user_id}", CREATE].map((route) =>
      fingerprint(route, fields),
    );
    expect(new Set(prints).size).toBe(3);
  });

  it("differs when any one field differs", () => {
    const variants = [
      base,
      ["summer", 100, base[2], null],
      ["spring", 101, base[2], null],
      ["spring", 100, new Date("2026-03-01T09:00:00.001Z"), null],
      ["spring", 100, null, null],
      ["spring", 100, base[2], new Date("2026-03-02T09:00:00Z")],
    ];
    expect(new Set(variants.map((fields) => fingerprint(CREATE, fields))).size).toBe(variants.length);
  });

  it("keeps field boundaries and types apart", () => {
    const route = "POST /api/coupons/claim";
    expect(fingerprint(route, ["ab", "c"])).not.toBe(fingerprint(route, ["a", "bc"]));
    expect(fingerprint(route, ["a", 1])).not.toBe(fingerprint(route, ["a", "1"]));
    expect(fingerprint(route, ["a", null])).not.toBe(fingerprint(route, ["a", "null"]));
    expect(fingerprint(route, ["a", "b"])).not.toBe(fingerprint(route, ["b", "a"]));
  });
});
