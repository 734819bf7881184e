// The embedded database's first start without initdb: `bun run build` prepares a data folder (initdb
// and every migration, scripts/prepare-data.ts) and embeds it in the binary as a tarball; a first
// start unpacks it instead of running initdb inside WebAssembly (seconds, and hundreds of MB).
import { existsSync, mkdirSync, renameSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";

/** The tarball's name in dist/ and among the binary's embedded files (with Bun's content hash). */
export const PREPARED_FILE = "pgdata.tgz";
const EMBEDDED_NAME = /^pgdata(-[a-z0-9]+)?\.tgz$/;

/** PostgreSQL's own mark of an initialised folder: PGlite runs initdb where it is missing. */
export const MARKER = "PG_VERSION";
/** The marker's name in the tarball: it becomes MARKER only once everything else is unpacked. */
export const STAGED_MARKER = `${MARKER}.unpacking`;

/**
 * The prepared data folder embedded in this binary, or undefined when not compiled (`bun src/main.ts`):
 * a tarball left in dist/ by an earlier build may belong to another PGlite, so only the binary built
 * with it uses it.
 */
export function embeddedPreparedData(): Blob | undefined {
  return Bun.embeddedFiles.find((file) => EMBEDDED_NAME.test((file as File).name));
}

/** True when `dataDir` holds a whole database: PostgreSQL's PG_VERSION is in it. */
export function isInitialised(dataDir: string): boolean {
  return existsSync(join(dataDir, MARKER));
}

/**
 * Unpacks the prepared `tarball` into `dataDir` so that a start cut short never leaves half a
 * database: every file lands (over whatever an earlier cut start left) before the marker is renamed
 * into place; until then the folder reads as empty and the next start unpacks it again. The kernel
 * keeps every write that returned when the process dies; the machine's crash is beyond embedded
 * mode's promise (PGlite runs PostgreSQL with fsync off).
 */
export async function unpackDataDir(tarball: Blob, dataDir: string): Promise<void> {
  const made = new Set<string>();
  const folder = (path: string) => {
    if (!made.has(path)) mkdirSync(path, { recursive: true });
    made.add(path);
  };
  for (const entry of tarEntries(Bun.gunzipSync(await tarball.bytes()))) {
    const path = join(dataDir, entry.name);
    if (!entry.data) folder(path);
    else {
      folder(dirname(path));
      writeFileSync(path, entry.data);
    }
  }
  renameSync(join(dataDir, STAGED_MARKER), join(dataDir, MARKER));
}

/**
 * The entries of an uncompressed ustar archive as Bun.Archive writes one: a folder's name ends in "/"
 * and it has no data. Read here rather than by Bun.Archive's extract, which reports any failed write
 * (a full disk) as "ReadError"; node:fs names its errno and path, which the start-up failure shows.
 */
function* tarEntries(tar: Uint8Array): Generator<{ name: string; data?: Uint8Array }> {
  const text = new TextDecoder();
  const field = (at: number, length: number) => {
    const bytes = tar.subarray(at, at + length);
    const end = bytes.indexOf(0);
    return text.decode(end < 0 ? bytes : bytes.subarray(0, end));
  };
  for (let at = 0; at + 512 <= tar.length; ) {
    const name = field(at, 100);
    if (!name) return; // the zero blocks that end the archive
    const prefix = field(at + 345, 155);
    const size = Number.parseInt(field(at + 124, 12).trim() || "0", 8);
    const type = tar[at + 156];
    // '0' or NUL a file, '5' a folder; the long-name and pax records PGDATA's short paths never need are refused.
    if (type !== 0x30 && type !== 0 && type !== 0x35)
      throw new Error(`the prepared data folder has a tar entry of type ${type}: ${name}`);
    const folder = name.endsWith("/") || type === 0x35;
    const start = at + 512;
    yield { name: prefix ? `${prefix}/${name}` : name, data: folder ? undefined : tar.subarray(start, start + size) };
    at = start + Math.ceil(size / 512) * 512;
  }
}
