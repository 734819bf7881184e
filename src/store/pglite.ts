// What the embedded PGlite needs beyond its npm package: its WebAssembly and data bundle, imported as
// files so `bun build --compile` embeds them (without this the compiled binary looks for them next to
// a node_modules that is not there), PostgreSQL's settings for one client, and a lock so two
// processes never open one data folder.
import { dlopen, FFIType, type Pointer, read } from "bun:ffi";
import { closeSync, constants, ftruncateSync, mkdirSync, openSync, readFileSync, writeSync } from "node:fs";
import { constants as os } from "node:os";
import { join } from "node:path";
import { PGlite } from "@electric-sql/pglite";
import initdbWasmPath from "../../node_modules/@electric-sql/pglite/dist/initdb.wasm" with { type: "file" };
import pgliteDataPath from "../../node_modules/@electric-sql/pglite/dist/pglite.data" with { type: "file" };
import pgliteWasmPath from "../../node_modules/@electric-sql/pglite/dist/pglite.wasm" with { type: "file" };

/**
 * PGlite's own start parameters (single-user mode; fsync off, as ever: a commit writes its WAL before
 * it answers, and nothing flushes it) with a smaller buffer cache and fewer backend slots. Shared
 * memory is touched whole at start, and at PostgreSQL's defaults (128 MB, 100 connections) it was
 * most of the process's memory; this process is the database's only client.
 */
export const PGLITE_START_PARAMS = [
  ...PGlite.defaultStartParams,
  ...["-c", "shared_buffers=4MB", "-c", "max_connections=5"],
];

/**
 * The options that hand PGlite its embedded files; initdb's WebAssembly only when it will run (a
 * folder neither initialised nor prepared), since compiling it costs time and memory for nothing.
 * The compiling starts before this returns and goes on in JavaScriptCore's threads.
 */
export async function pgliteAssets(initdb: boolean) {
  const [pgliteWasmModule, initdbWasmModule] = await Promise.all([
    WebAssembly.compile(readFileSync(pgliteWasmPath)),
    initdb ? WebAssembly.compile(readFileSync(initdbWasmPath)) : undefined,
  ]);
  return { pgliteWasmModule, fsBundle: Bun.file(pgliteDataPath), ...(initdbWasmModule ? { initdbWasmModule } : {}) };
}

/**
 * Claims `dataDir` for this process (a second one would corrupt it) with flock(2) on its lock file, a
 * lock the kernel drops when the process dies however it dies; returns the release function.
 */
export function lockDataDir(dataDir: string): () => void {
  mkdirSync(dataDir, { recursive: true });
  const lockFile = join(dataDir, "coupon-service.lock");
  const { flock, errno } = libc();
  // No O_TRUNC: until we hold the lock, the PID in the file is the holder's. Bun opens with O_CLOEXEC,
  // so no child process inherits the descriptor (and with it the lock).
  const fd = openSync(lockFile, constants.O_RDWR | constants.O_CREAT, 0o644);
  if (flock(fd, LOCK_EX | LOCK_NB) !== 0) {
    const error = errno();
    closeSync(fd);
    throw error === os.errno.EWOULDBLOCK ? inUse(dataDir, lockFile) : cannotLock(lockFile, error);
  }
  // The PID is for operators only: nothing reads it to decide, since it may be another namespace's.
  ftruncateSync(fd, 0);
  writeSync(fd, `${process.pid}\n`, 0);
  let released = false;
  // Closing the one descriptor releases the lock. The file stays: unlinking a locked file would let
  // the next process lock a new inode while a late one still locks the old.
  return () => {
    if (!released) closeSync(fd);
    released = true;
  };
}

const LOCK_EX = 2; // <sys/file.h>, the same on Linux and macOS
const LOCK_NB = 4;

// libc's flock and errno, opened on first use so PostgreSQL mode never loads them. A system library:
// the compiled binary finds it through the dynamic loader like any process (glibc on distroless).
let symbols: { flock: (fd: number, operation: number) => number; errno: () => number } | undefined;
function libc() {
  if (symbols) return symbols;
  if (process.platform === "win32") throw new Error("embedded mode needs flock(2) to lock DATA_DIR: set DATABASE_URL");
  const darwin = process.platform === "darwin";
  const errnoLocation = darwin ? "__error" : "__errno_location"; // returns &errno (thread-local)
  const lib = dlopen(darwin ? "libSystem.B.dylib" : "libc.so.6", {
    flock: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    [errnoLocation]: { args: [], returns: FFIType.ptr },
  }).symbols;
  const location = lib[errnoLocation] as () => Pointer; // declared just above, so never undefined
  symbols = { flock: lib.flock, errno: () => read.i32(location(), 0) };
  return symbols;
}

function inUse(dataDir: string, lockFile: string): Error {
  const pid = readFileSync(lockFile, "utf8").trim();
  return new Error(
    `DATA_DIR ${dataDir} is locked by another running process${pid ? ` (its lock file says PID ${pid})` : ""}, ` +
      "possibly another container sharing the volume. Embedded mode runs one instance per data folder: " +
      "stop that process or set DATA_DIR to another folder.",
  );
}

function cannotLock(lockFile: string, error: number): Error {
  return new Error(
    `cannot lock ${lockFile} (flock errno ${error}); the filesystem may not support locks: put DATA_DIR on a local disk`,
  );
}

// PGlite's file system (Emscripten's) throws ErrnoError objects with a WASI errno and no message.
const WASI_ERRNO: Record<number, [code: string, words: string]> = {
  2: ["EACCES", "permission denied"],
  19: ["EDQUOT", "disk quota exceeded"],
  20: ["EEXIST", "file exists"],
  29: ["EIO", "input/output error"],
  44: ["ENOENT", "no such file or directory"],
  48: ["ENOMEM", "out of memory"],
  51: ["ENOSPC", "no space left on device"],
  54: ["ENOTDIR", "not a directory"],
  63: ["EPERM", "operation not permitted"],
  69: ["EROFS", "read-only file system"],
};

/** A file system failure in `dataDir` as an Error that says what it is (ENOSPC, EACCES …), else `error` as is. */
export function fileSystemError(error: unknown, dataDir: string): unknown {
  const errno = (error as { errno?: unknown } | null)?.errno;
  if (typeof errno !== "number" || error instanceof Error) return error;
  const [code, words] = WASI_ERRNO[errno] ?? [`errno ${errno}`, "file system error"];
  return Object.assign(
    new Error(`${code}: ${words}, in the embedded database's files under ${dataDir}`, { cause: error }),
    {
      code,
      path: dataDir,
    },
  );
}
