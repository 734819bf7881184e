// Raw `execute()` results differ between drivers: postgres.js returns an array, PGlite `{ rows }`.
import type { SQL } from "drizzle-orm";
import type { Database } from "./client";

/** Runs a raw SQL statement and returns its rows, whichever driver is underneath. */
export async function queryRows<T>(db: Pick<Database, "execute">, query: SQL): Promise<T[]> {
  const result = (await db.execute(query)) as unknown;
  return (Array.isArray(result) ? result : (result as { rows: T[] }).rows) as T[];
}
