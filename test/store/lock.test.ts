// Embedded mode's data-folder lock: held by the kernel for a live process only, whatever the file says.
import { afterAll, afterEach, beforeEach, describe, expect, it } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { lockDataDir } from "../../src/store/pglite";

const lockModule = join(import.meta.dir, "../../src/store/pglite.ts");

/** Starts a separate `bun` process that takes the lock on `dir` and holds it until killed. */
async function startHolder(dir: string) {
  const script = `import { lockDataDir } from ${JSON.stringify(lockModule)};
lockDataDir(${JSON.stringify(dir)}); console.log("locked"); setInterval(() => {}, 1 << 30);`;
  const child = Bun.spawn([process.execPath, "-e", script], { stdout: "pipe", stderr: "pipe" });
  const { value } = await child.stdout.getReader().read();
  const said = new TextDecoder().decode(value);
  if (!said.includes("locked")) throw new Error(`holder did not lock: ${said}${await child.stderr.text()}`);
  return child;
}

/** What another `bun` process meets when it tries to lock `dir`: "locked", or the message it was refused with. */
async function lockFromAnotherProcess(dir: string): Promise<string> {
  const script = `import { lockDataDir } from ${JSON.stringify(lockModule)};
try { lockDataDir(${JSON.stringify(dir)})(); console.log("locked"); } catch (error) { console.log(error.message); }`;
  const child = Bun.spawn([process.execPath, "-e", script], { stdout: "pipe", stderr: "pipe" });
  const [said] = await Promise.all([child.stdout.text(), child.exited]);
  return said.trim();
}

/** Checks that this process holds `dir`: its PID is in the lock file, and another process is refused. */
async function expectHeldByThisProcess(dir: string) {
  expect(readFileSync(join(dir, "coupon-service.lock"), "utf8")).toBe(`${process.pid}\n`);
  expect(await lockFromAnotherProcess(dir)).toStartWith(
    `DATA_DIR ${dir} is locked by another running process (its lock file says PID ${process.pid})`,
  );
}

describe("lockDataDir", () => {
  const folders: string[] = [];
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "coupon-lock-"));
    folders.push(dir);
  });
  afterAll(() => {
    for (const folder of folders) rmSync(folder, { recursive: true, force: true });
  });

  it("starts on a folder whose lock file is empty (left by a start on a full disk)", async () => {
    writeFileSync(join(dir, "coupon-service.lock"), "");
    const release = lockDataDir(dir);
    await expectHeldByThisProcess(dir);
    release();
  }, 20_000);

  it("starts on a folder whose lock file names a live process that holds no lock (PID 1, a reused PID)", async () => {
    for (const stalePid of [1, process.ppid]) {
      writeFileSync(join(dir, "coupon-service.lock"), String(stalePid));
      const release = lockDataDir(dir);
      await expectHeldByThisProcess(dir);
      release();
    }
  }, 20_000);

  it("refuses a second lock from this same process until the first is released", () => {
    const release = lockDataDir(dir);
    expect(() => lockDataDir(dir)).toThrow(/is locked by another running process/);
    release();
    lockDataDir(dir)();
  });

  it("keeps the lock file, with this process's PID in it for operators", () => {
    const release = lockDataDir(dir);
    expect(readFileSync(join(dir, "coupon-service.lock"), "utf8")).toBe(`${process.pid}\n`);
    release();
    release(); // a second call (close after a failed open) must not close someone else's descriptor
    expect(existsSync(join(dir, "coupon-service.lock"))).toBe(true);
  });

  describe("with another live process holding the folder", () => {
    let holder: Awaited<ReturnType<typeof startHolder>> | undefined;
    afterEach(() => holder?.kill("SIGKILL"));

    it("refuses with an error naming the folder and what to do", async () => {
      holder = await startHolder(dir);
      const error = (() => {
        try {
          lockDataDir(dir)();
        } catch (caught) {
          return caught as Error;
        }
      })();
      expect(error?.message).toBe(
        `DATA_DIR ${dir} is locked by another running process (its lock file says PID ${holder.pid}), ` +
          "possibly another container sharing the volume. Embedded mode runs one instance per data folder: " +
          "stop that process or set DATA_DIR to another folder.",
      );
    }, 20_000);

    it("takes the folder once the holder is killed with SIGKILL, with no clean-up by hand", async () => {
      holder = await startHolder(dir);
      expect(() => lockDataDir(dir)).toThrow(/is locked by another running process/);
      holder.kill("SIGKILL");
      await holder.exited;
      expect(readFileSync(join(dir, "coupon-service.lock"), "utf8")).toBe(`${holder.pid}\n`); // stale PID left
      lockDataDir(dir)();
    }, 20_000);
  });
});
