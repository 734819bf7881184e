// The embedded database: PGlite in this process, in DATA_DIR, when DATABASE_URL is unset. Loaded by
// client.ts only then, so a service on PostgreSQL never evaluates PGlite's modules at start-up.
import { PGlite } from "@electric-sql/pglite";
import { drizzle as drizzlePglite } from "drizzle-orm/pglite";
import { type FeedOptions, listenPglite } from "./changes";
import type { Database } from "./database";
import type { DatabaseHandle } from "./handle";
import { runMigrations } from "./migrate";
import { fileSystemError, lockDataDir, PGLITE_START_PARAMS, pgliteAssets } from "./pglite";
import { embeddedPreparedData, isInitialised, unpackDataDir } from "./prepared";
import * as schema from "./schema";

/**
 * Opens (creating if needed) the embedded PGlite database in `dataDir`; `memory://` keeps it in RAM.
 * A new folder is made from `prepared` (the binary's prepared data folder) when there is one, else by
 * PGlite's initdb.
 */
export async function openEmbedded(dataDir: string, prepared = embeddedPreparedData()): Promise<DatabaseHandle> {
  const inMemory = dataDir.startsWith("memory://");
  const unlock = inMemory ? () => {} : lockDataDir(dataDir);
  try {
    const fresh = !inMemory && !isInitialised(dataDir);
    const assets = pgliteAssets(inMemory || (fresh && !prepared));
    assets.catch(() => {}); // awaited below; not unhandled if unpacking fails first
    if (fresh && prepared) await unpackDataDir(prepared, dataDir);
    const client = await PGlite.create({ dataDir, ...(await assets), startParams: PGLITE_START_PARAMS });
    const db = drizzlePglite(client, { schema }) as unknown as Database;
    const close = async () => {
      await client.close();
      unlock();
    };
    const listen = (options: FeedOptions) => listenPglite(client, options);
    const timeouts = async () => null;
    return { db, kind: "pglite", migrate: () => runMigrations(db), checkLock: async () => {}, listen, timeouts, close };
  } catch (error) {
    unlock();
    throw fileSystemError(error, dataDir);
  }
}
