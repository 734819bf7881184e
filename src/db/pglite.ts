// What the embedded PGlite needs beyond its npm package: its WebAssembly and data bundle, imported as
// files so `bun build --compile` embeds them (without this the compiled binary looks for them next to
// a node_modules that is not there), and a lock so two processes never open one data folder.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import initdbWasmPath from "../../node_modules/@electric-sql/pglite/dist/initdb.wasm" with { type: "file" };
import pgliteDataPath from "../../node_modules/@electric-sql/pglite/dist/pglite.data" with { type: "file" };
import pgliteWasmPath from "../../node_modules/@electric-sql/pglite/dist/pglite.wasm" with { type: "file" };

/** The options that hand PGlite its embedded files. */
export async function pgliteAssets() {
  const [pgliteWasmModule, initdbWasmModule] = await Promise.all([
    WebAssembly.compile(await Bun.file(pgliteWasmPath).arrayBuffer()),
    WebAssembly.compile(await Bun.file(initdbWasmPath).arrayBuffer()),
  ]);
  return { pgliteWasmModule, initdbWasmModule, fsBundle: Bun.file(pgliteDataPath) };
}

/** Claims `dataDir` for this process (a second one would corrupt it); returns the release function. */
export function lockDataDir(dataDir: string): () => void {
  mkdirSync(dataDir, { recursive: true });
  const lockFile = join(dataDir, "coupon-service.lock");
  try {
    writeFileSync(lockFile, String(process.pid), { flag: "wx" });
  } catch {
    const holder = Number(readFileSync(lockFile, "utf8"));
    if (holder !== process.pid && isAlive(holder)) {
      throw new Error(`${dataDir} is in use by process ${holder}; embedded mode runs one instance per folder`);
    }
    writeFileSync(lockFile, String(process.pid)); // the holder is gone (crash, container restart)
  }
  return () => rmSync(lockFile, { force: true });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
