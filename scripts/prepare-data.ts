// `bun scripts/prepare-data.ts` (run by `bun run build` before it compiles): the embedded database's
// data folder as a first start would make it (PGlite's initdb, then every migration), shut down
// cleanly, without the template databases, and packed into dist/pgdata.tgz, which the build embeds in the binary (src/store/prepared.ts).
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sql } from "drizzle-orm";
import { openPglite } from "../src/store/client";
import { MARKER, PREPARED_FILE, STAGED_MARKER } from "../src/store/prepared";

const LOCK_FILE = "coupon-service.lock"; // this process's, not the database's

/**
 * A freshly initialised data folder with every migration applied, as a gzipped tarball. Only the
 * service's database is kept: template0 and template1 serve CREATE DATABASE alone, which nothing runs
 * here, and hold two thirds of the files a first start would have to write.
 */
export async function prepareDataDir(): Promise<Uint8Array> {
  const folder = mkdtempSync(join(tmpdir(), "coupon-prepare-"));
  try {
    // No prepared data given: PGlite runs initdb, as the very first start used to.
    const handle = await openPglite(folder, undefined);
    try {
      await handle.migrate();
      for (const template of ["template0", "template1"]) {
        await handle.db.execute(sql.raw(`alter database ${template} with allow_connections true is_template false`));
        await handle.db.execute(sql.raw(`drop database ${template}`));
      }
    } finally {
      await handle.close(); // a clean shutdown: the first start has no WAL to replay
    }
    return await packFolder(folder);
  } finally {
    rmSync(folder, { recursive: true, force: true });
  }
}

/** Every file and folder (empty ones too: PostgreSQL needs them) under `folder`, but the lock file, in a gzipped tarball. */
async function packFolder(folder: string): Promise<Uint8Array> {
  const entries: Record<string, Uint8Array | string> = {};
  for (const entry of readdirSync(folder, { recursive: true, withFileTypes: true })) {
    const path = join(entry.parentPath, entry.name);
    const name = path.slice(folder.length + 1);
    if (name === LOCK_FILE) continue;
    if (entry.isDirectory()) entries[`${name}/`] = "";
    // The marker under another name: a folder cut short while unpacking lacks it (src/store/prepared.ts).
    else if (entry.isFile()) entries[name === MARKER ? STAGED_MARKER : name] = readFileSync(path);
  }
  return new Bun.Archive(entries, { compress: "gzip", level: 9 }).bytes();
}

if (import.meta.main) {
  const dist = join(import.meta.dir, "..", "dist");
  mkdirSync(dist, { recursive: true });
  const started = performance.now();
  const tarball = await prepareDataDir();
  await Bun.write(join(dist, PREPARED_FILE), tarball);
  const ms = Math.round(performance.now() - started);
  console.log(`prepared the embedded data folder: dist/${PREPARED_FILE}, ${tarball.byteLength} bytes, in ${ms} ms`);
}
