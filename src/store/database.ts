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
