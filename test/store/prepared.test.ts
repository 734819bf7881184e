// Embedded mode's first start from the prepared data folder the build embeds (scripts/prepare-data.ts):
// a whole, migrated database at once; an older folder migrated, never replaced; a start cut short at
// any point leaves a folder the next start makes whole.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sql } from "drizzle-orm";
import { prepareDataDir } from "../../scripts/prepare-data";
import { type DatabaseHandle, openPglite } from "../../src/store/client";
import { queryRows } from "../../src/store/database";
import { embeddedMigrations, runMigrations } from "../../src/store/migrate";
import { isInitialised, MARKER, STAGED_MARKER, unpackDataDir } from "../../src/store/prepared";
import { buildApp } from "../support/app";
import { client } from "../support/http";

const folders: string[] = [];
const newFolder = () => {
  const folder = mkdtempSync(join(tmpdir(), "coupon-prepared-"));
  folders.push(folder);
  return join(folder, "data");
};
let tarball: Blob;
let tarballFile: string;

beforeAll(async () => {
  tarball = new Blob([await prepareDataDir()]);
  tarballFile = join(mkdtempSync(join(tmpdir(), "coupon-prepared-")), "pgdata.tgz");
  folders.push(join(tarballFile, ".."));
  await Bun.write(tarballFile, tarball);
}, 60_000);
afterAll(() => {
  for (const folder of folders) rmSync(folder, { recursive: true, force: true });
});

const appliedMigrations = async (handle: DatabaseHandle) =>
  (await queryRows<{ n: number }>(handle.db, sql`select count(*)::int as n from drizzle.__drizzle_migrations`))[0]?.n;

/** Opens `dataDir` as a first start of the binary would (with the prepared folder), migrates, and checks a sale works. */
async function expectWorkingDatabase(dataDir: string, coupon: string): Promise<void> {
  const handle = await openPglite(dataDir, tarball);
  try {
    await handle.migrate();
    expect(await appliedMigrations(handle)).toBe(embeddedMigrations().length);
    const api = client(buildApp(handle.db).app);
    expect((await api.get("/health/ready")).status).toBe(200);
    expect((await api.createCoupon(coupon, 1)).status).toBe(201);
    expect((await api.claim("first", coupon)).status).toBe(201);
    expect((await api.claim("second", coupon)).body.code).toBe("SOLD_OUT");
  } finally {
    await handle.close();
  }
}

describe("a first start from the prepared data folder", () => {
  it("opens a whole database with every migration applied: the migrator finds nothing to do", async () => {
    const dataDir = newFolder();
    const handle = await openPglite(dataDir, tarball);
    try {
      expect(readFileSync(join(dataDir, MARKER), "utf8").trim()).toMatch(/^\d+$/);
      expect(existsSync(join(dataDir, STAGED_MARKER))).toBe(false);
      expect(await appliedMigrations(handle)).toBe(embeddedMigrations().length);
      // Only the service's database: template0 and template1 serve CREATE DATABASE alone.
      const databases = await queryRows<{ datname: string }>(handle.db, sql`select datname from pg_database`);
      expect(databases.map((row) => row.datname)).toEqual(["postgres"]);
    } finally {
      await handle.close();
    }
    await expectWorkingDatabase(dataDir, "prepared");
  }, 30_000);

  it("migrates a folder an older release made (initdb, the first three migrations), keeping its data", async () => {
    const dataDir = newFolder();
    const older = await openPglite(dataDir, undefined); // no prepared folder: initdb, as releases before it did
    await runMigrations(older.db, embeddedMigrations().slice(0, 3));
    await older.db.execute(sql`insert into coupons (name, amount, remaining_amount) values ('kept', 2, 2)`);
    await older.close();

    const handle = await openPglite(dataDir, tarball);
    try {
      expect(await appliedMigrations(handle)).toBe(3); // not unpacked over
      await handle.migrate();
      expect(await appliedMigrations(handle)).toBe(embeddedMigrations().length);
      const api = client(buildApp(handle.db).app);
      expect((await api.claim("u", "kept")).status).toBe(201);
      expect((await api.getCoupon("kept")).body).toMatchObject({ amount: 2, remaining_amount: 1, claimed_by: ["u"] });
    } finally {
      await handle.close();
    }
  }, 60_000);
});

describe("a first start cut short", () => {
  it("leaves a folder without PostgreSQL's marker until every file is there; the next start unpacks it again", async () => {
    const dataDir = newFolder();
    await unpackDataDir(tarball, dataDir);
    // As if the process died before the marker's rename, with a file half written.
    renameSync(join(dataDir, MARKER), join(dataDir, STAGED_MARKER));
    writeFileSync(join(dataDir, "global", "pg_control"), "");
    expect(isInitialised(dataDir)).toBe(false);
    await expectWorkingDatabase(dataDir, "cut-before-marker");
  }, 30_000);

  it("by kill -9 at any point of the unpacking never leaves a folder that fails to open", async () => {
    const script = `import { unpackDataDir } from ${JSON.stringify(join(import.meta.dir, "../../src/store/prepared.ts"))};
const tarball = new Blob([await Bun.file(${JSON.stringify(tarballFile)}).bytes()]);
console.log("unpacking"); await unpackDataDir(tarball, process.argv[1]); console.log("unpacked"); await Bun.sleep(60_000);`;
    for (const delayMs of [20, 50, 80, 120]) {
      const dataDir = newFolder();
      const child = Bun.spawn([process.execPath, "-e", script, dataDir], { stdout: "pipe", stderr: "inherit" });
      const reader = child.stdout.getReader();
      const { value } = await reader.read();
      expect(new TextDecoder().decode(value)).toContain("unpacking");
      await Bun.sleep(delayMs);
      child.kill("SIGKILL");
      await child.exited;
      await expectWorkingDatabase(dataDir, `killed-${delayMs}`);
    }
  }, 60_000);
});

describe("a first start on a full disk", () => {
  // As test/startup.test.ts does: a 512 KiB tmpfs in a mount namespace of its own, too small to unpack into.
  const asRoot = process.getuid?.() === 0;
  const canMount = Bun.spawnSync(["unshare", ...(asRoot ? ["-m"] : ["-rm"]), "true"]).exitCode === 0;
  (canMount || process.env.CI ? it : it.skip)(
    "fails naming ENOSPC and what to do, as initdb's start does",
    async () => {
      const folder = mkdtempSync(join(tmpdir(), "coupon-prepared-full-"));
      folders.push(folder);
      const script = `import { openPglite } from ${JSON.stringify(join(import.meta.dir, "../../src/store/client.ts"))};
import { describeStartupFailure } from ${JSON.stringify(join(import.meta.dir, "../../src/startup.ts"))};
const tarball = new Blob([await Bun.file(${JSON.stringify(tarballFile)}).bytes()]);
try { await openPglite(process.argv[1], tarball); console.log("opened"); }
catch (error) { console.log(JSON.stringify(describeStartupFailure(error))); }`;
      const mount = `mount -t tmpfs -o size=512k tmpfs "$0" && exec bun -e "$1" "$0/data"`;
      const child = Bun.spawn(["unshare", ...(asRoot ? ["-m"] : ["-rm"]), "sh", "-c", mount, folder, script], {
        stdout: "pipe",
        stderr: "pipe",
      });
      const [stdout] = await Promise.all([new Response(child.stdout).text(), child.exited]);
      const failure = JSON.parse(stdout.trim().split("\n").at(-1) ?? "{}");
      expect(failure.msg).toStartWith("startup failed: ENOSPC");
      expect(failure.fields).toMatchObject({ code: "ENOSPC" });
      expect(failure.fields.hint).toContain("set DATA_DIR to a folder on a disk with room");
    },
    30_000,
  );
});
