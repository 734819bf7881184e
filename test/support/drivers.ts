// The two databases the store runs on, for store tests that must hold on both: a fresh migrated
// PostgreSQL database, and PGlite in memory.
import { openPglite } from "../../src/store/client";
import type { Database } from "../../src/store/database";
import { createTestDatabase } from "./database";

/** An opened database and how to close it. */
export interface Opened {
  db: Database;
  close: () => Promise<void>;
}

/** [name, open] per driver, for `describe.each`. */
export const drivers: [string, () => Promise<Opened>][] = [
  [
    "PostgreSQL",
    async () => {
      const database = await createTestDatabase();
      return { db: database.handle.db, close: () => database.drop() };
    },
  ],
  [
    "PGlite",
    async () => {
      const handle = await openPglite("memory://");
      await handle.migrate();
      return { db: handle.db, close: () => handle.close() };
    },
  ],
];
