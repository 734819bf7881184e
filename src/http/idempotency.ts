// The Idempotency-Key header (the IETF httpapi draft, as Stripe behaves): parsed, and pinned to the
// request it came with by a fingerprint of its route and fields. The claimer makes requests with one
// key take turns (engine/key-turns.ts); the database stores each key's decision (store/keys.ts).
import { createHash } from "node:crypto";
import type { IdempotencyKey } from "../domain/claim";
import { AppError } from "../domain/errors";

export const IDEMPOTENCY_HEADER = "idempotency-key";
const PRINTABLE = /^[\x20-\x7e]{1,255}$/;
const KEY_RULE =
  "Idempotency-Key: must be 1..255 printable ASCII characters (a quoted string counts without its quotes)";

/**
 * The key of a request, or undefined without the header. The draft sends it as a structured-field
 * string ("..."), Stripe's clients bare: both are taken, the quotes and escapes removed.
 */
export function idempotencyKey(header: string | null | undefined): string | undefined {
  if (header === null || header === undefined) return undefined;
  let key = header;
  if (key.length >= 2 && key.startsWith('"') && key.endsWith('"')) {
    const inner = key.slice(1, -1);
    // Only \" and \\ may be escaped, and a quote must be.
    if (!/^(?:[^"\\]|\\["\\])*$/.test(inner)) throw new AppError("VALIDATION_FAILED", KEY_RULE);
    key = inner.replace(/\\(["\\])/g, "$1");
  }
  if (!PRINTABLE.test(key) || key.trim() === "") throw new AppError("VALIDATION_FAILED", KEY_RULE);
  return key;
}

/** The fingerprint of a request: its route and its fields, in a fixed order. */
export function fingerprint(route: string, fields: readonly unknown[]): string {
  return createHash("sha256")
    .update(JSON.stringify([route, ...fields]))
    .digest("base64url");
}

/** The key of a request with `header`, pinned to `route` and `fields`; undefined without the header. */
export function keyOf(
  header: string | null | undefined,
  route: string,
  fields: readonly unknown[],
  ttlMs: number,
): IdempotencyKey | undefined {
  const key = idempotencyKey(header);
  return key === undefined ? undefined : { key, fingerprint: fingerprint(route, fields), ttlMs };
}
