// Recognising PostgreSQL and connection failures through drizzle's error wrapping.

/** The SQLSTATE of a PostgreSQL error, looking through wrappers such as DrizzleQueryError. */
export function pgErrorCode(error: unknown): string | undefined {
  for (let e = error, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && /^[0-9A-Z]{5}$/.test(code)) return code;
  }
  return undefined;
}

export const UNIQUE_VIOLATION = "23505";
export const CHECK_VIOLATION = "23514";

// postgres.js connection error codes (TARGET_SESSION_ATTRS: no host was the primary the URL asks for,
// patches/), and SQLSTATEs that mean "the database cannot serve right now": connection exceptions (08),
// shutdown / cannot connect (57P0x), statement timeout (57014), lock timeout (55P03), too many
// connections (53300), and a read-only transaction (25006): the server is a standby or read-only, and
// the service never asks for a read-only transaction itself.
const CONNECTION_CODES = new Set([
  "TARGET_SESSION_ATTRS",
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
]);

/** True when `error` says the database is unreachable, overloaded or too slow, not that the query is wrong. */
export function isDatabaseUnavailable(error: unknown): boolean {
  for (let e = error, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code !== "string") continue;
    if (CONNECTION_CODES.has(code)) return true;
    if (/^(08|57P0)/.test(code) || ["57014", "55P03", "53300", "25006"].includes(code)) return true;
  }
  return false;
}
