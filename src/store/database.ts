// The handle every store function takes first, in a file that opens nothing: the store's functions and
// their callers import the type from here, the code that opens connections (client.ts) builds it.
import type { SQL } from "drizzle-orm";
import type { PgDatabase, PgQueryResultHKT } from "drizzle-orm/pg-core";
import type * as schema from "./schema";

/** Drizzle over postgres.js or PGlite: the same API either way. */
export type Database = PgDatabase<PgQueryResultHKT, typeof schema>;

/** Runs a raw SQL statement and returns its rows, whichever driver is underneath (postgres.js: an array; PGlite: `{ rows }`). */
export async function queryRows<T>(db: Pick<Database, "execute">, query: SQL): Promise<T[]> {
  const result = (await db.execute(query)) as unknown;
  return (Array.isArray(result) ? result : (result as { rows: T[] }).rows) as T[];
}

/**
 * A text[] parameter as PostgreSQL's array literal, for a statement that casts it (`${param}::text[]`).
 * Sent as a string, a statement's parameters need no type from the server: the driver sends it in one
 * round trip, where a JS array costs a second (the driver asks for the types first; patches/).
 */
export function textArray(values: readonly (string | null)[]): string {
  const element = (value: string | null) =>
    value === null ? "NULL" : `"${value.replaceAll("\\", "\\\\").replaceAll('"', '\\"')}"`;
  return `{${values.map(element).join(",")}}`;
}
