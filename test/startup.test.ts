// Start-up failures name their cause and what to do, from the real driver's errors against the test
// server: an unreachable server, a missing database, a role without CREATE, another application's tables.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sql } from "drizzle-orm";
import postgres from "postgres";
import { loadConfig } from "../src/config";
import { describeStartupFailure, withoutParams } from "../src/startup";
import { openPostgres } from "../src/store/client";
import { createTestDatabase, type TestDatabase } from "./support/database";
import { runToExit } from "./support/service";

const adminUrl = () => process.env.TEST_DATABASE_URL as string;
const urlFor = (database: string, user?: string) => {
  const url = new URL(adminUrl());
  url.pathname = `/${database}`;
  if (user) {
    url.username = user;
    url.password = "";
  }
  return url.href;
};

/** A TCP port on 127.0.0.1 that nothing listens on (it was free a moment ago). */
function closedPort(): number {
  const probe = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response() });
  const port = probe.port as number;
  probe.stop(true);
  return port;
}

/** What migrating `url` throws, as main.ts would see it. */
async function migrationError(url: string): Promise<unknown> {
  const handle = openPostgres(url, loadConfig({ DATABASE_URL: url, DATABASE_CONNECT_TIMEOUT_MS: "2000" }));
  try {
    await handle.migrate();
    throw new Error("migrating succeeded");
  } catch (error) {
    return error;
  } finally {
    await handle.close(1000);
  }
}

const suffix = `${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 6)}`;
const noCreateRole = `coupon_nocreate_${suffix}`;
const noCreateDb = `coupon_nocreate_${suffix}`;
let admin: postgres.Sql;
let taken: TestDatabase;

beforeAll(async () => {
  admin = postgres(adminUrl(), { max: 1, onnotice: () => {} });
  await admin.unsafe(`create role ${noCreateRole} login`);
  await admin.unsafe(`create database ${noCreateDb}`);
  const inside = postgres(urlFor(noCreateDb), { max: 1, onnotice: () => {} });
  await inside.unsafe(
    `revoke create on schema public from public; grant create on database ${noCreateDb} to ${noCreateRole}`,
  );
  await inside.end();
  taken = await createTestDatabase({ migrate: false });
  await taken.sql`create table coupons (id int)`;
});
afterAll(async () => {
  await taken.drop();
  await admin.unsafe(`drop database if exists ${noCreateDb} with (force)`);
  await admin.unsafe(`drop role if exists ${noCreateRole}`);
  await admin.end();
});

describe("describeStartupFailure", () => {
  it("names a refused connection with its host:port and says to check the server", async () => {
    const port = closedPort();
    const failure = describeStartupFailure(await migrationError(`postgres://postgres@127.0.0.1:${port}/postgres`));
    expect(failure.msg).toBe(`startup failed: connect ECONNREFUSED 127.0.0.1:${port}`);
    expect(failure.fields).toMatchObject({ code: "ECONNREFUSED" });
    expect(failure.fields.hint).toContain(`nothing accepts connections at 127.0.0.1:${port}`);
  });

  it("says to create a database that does not exist", async () => {
    const failure = describeStartupFailure(await migrationError(urlFor(`coupon_missing_${suffix}`)));
    expect(failure.msg).toBe(`startup failed: database "coupon_missing_${suffix}" does not exist`);
    expect(failure.fields).toMatchObject({ code: "3D000" });
    expect(failure.fields.hint).toContain("create it first");
  });

  it("says to grant CREATE when the role may not create tables", async () => {
    const failure = describeStartupFailure(await migrationError(urlFor(noCreateDb, noCreateRole)));
    expect(failure.msg).toBe("startup failed: permission denied for schema public");
    expect(failure.fields).toMatchObject({ code: "42501" });
    expect(failure.fields.hint).toContain("grant it CREATE on the database and on schema public");
    // The wrapper's message is kept as context: which statement failed.
    expect((failure.fields.causes as string[])[0]).toStartWith('DrizzleQueryError: Failed query: CREATE TABLE "');
  });

  it("says to use an empty database when another application's tables are there", async () => {
    const failure = describeStartupFailure(await migrationError(taken.url));
    expect(failure.msg).toBe('startup failed: relation "coupons" already exists');
    expect(failure.fields).toMatchObject({ code: "42P07" });
    expect(failure.fields.hint).toContain("use an empty database");
  });

  it("never logs query parameters, and keeps the stack of an unrecognised failure", async () => {
    let error: unknown;
    try {
      await taken.handle.db.execute(sql`select ${"s3cret-param"}::text from no_such_table`);
    } catch (caught) {
      error = caught;
    }
    expect(String((error as Error).message)).toContain("s3cret-param"); // drizzle's own message has it
    const failure = describeStartupFailure(error);
    expect(failure.msg).toBe('startup failed: relation "no_such_table" does not exist');
    expect(JSON.stringify(failure)).not.toContain("s3cret-param");
    expect(failure.fields.stack).toContain("    at ");
  });
});

describe("describeStartupFailure's hints for the rarer causes", () => {
  // Causes the test server cannot be made to produce on demand; each code as the driver reports it.
  const cases: [string, string][] = [
    ["ENOTFOUND", "does not resolve"],
    ["EAI_AGAIN", "does not resolve"],
    ["CONNECT_TIMEOUT", "within DATABASE_CONNECT_TIMEOUT_MS"],
    ["ETIMEDOUT", "within DATABASE_CONNECT_TIMEOUT_MS"],
    ["28P01", "refused the login"],
    ["28000", "refused the login"],
    ["42P06", "use an empty database"],
    ["53300", "no connection slot left"],
    ["57P03", "starting up or in recovery"],
    ["EADDRINUSE", "set PORT to a free port"],
    ["EACCES", "1024 or above"],
  ];
  for (const [code, advice] of cases) {
    it(`advises on ${code}, found through the cause chain`, () => {
      const driver = Object.assign(new Error(`driver says ${code}`), { code });
      const failure = describeStartupFailure(new Error("Failed query: select 1\nparams: p", { cause: driver }));
      expect(failure.msg).toBe(`startup failed: driver says ${code}`);
      expect(failure.fields).toMatchObject({ code });
      expect(failure.fields.hint).toContain(advice);
      expect(failure.fields.stack).toBeUndefined();
    });
  }
});

describe("withoutParams", () => {
  it("drops drizzle's params line up to the stack's first frame", () => {
    const stack = "Error: Failed query: select $1\nparams: a,\nb\n    at f (x.ts:1:1)";
    expect(withoutParams(stack)).toBe("Error: Failed query: select $1\n    at f (x.ts:1:1)");
  });
});

describe("the entry point on an unreachable database", () => {
  it("exits 1 with one line naming ECONNREFUSED and the host:port, without parameters", async () => {
    const port = closedPort();
    const { code, logs } = await runToExit([], { DATABASE_URL: `postgres://postgres@127.0.0.1:${port}/postgres` });
    expect(code).toBe(1);
    const errors = logs.filter((line) => line.level === "error");
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({
      msg: `startup failed: connect ECONNREFUSED 127.0.0.1:${port}`,
      code: "ECONNREFUSED",
    });
    expect(JSON.stringify(errors[0])).not.toMatch(/params|parameters|Failed query/);
  });

  it("lists an unparseable DATABASE_URL as a configuration error, without its password", async () => {
    const { code, logs } = await runToExit([], { DATABASE_URL: "postgres://u:pw-s3cret@127.0.0.1:notaport/x" });
    expect(code).toBe(1);
    expect(logs[0]?.msg).toBe(
      'Invalid configuration:\n  - DATABASE_URL="postgres://u:***@127.0.0.1:notaport/x": expected postgres://user:password@host:5432/database (a URL postgres.js can parse)',
    );
  });
});

describe("embedded mode on a full disk", () => {
  // A 512 KiB tmpfs in a mount namespace of its own (as root, or in a user namespace otherwise): too
  // small for the embedded database's first start.
  const asRoot = process.getuid?.() === 0;
  const canMount = Bun.spawnSync(["unshare", ...(asRoot ? ["-m"] : ["-rm"]), "true"]).exitCode === 0;
  if (!canMount && !process.env.CI) console.warn("full-disk start-up test skipped: cannot unshare a mount namespace");
  (canMount || process.env.CI ? it : it.skip)(
    "exits 1 naming ENOSPC and what to do, never [object Object]",
    async () => {
      const folder = mkdtempSync(join(tmpdir(), "coupon-full-disk-"));
      try {
        const main = join(import.meta.dir, "../src/main.ts");
        const script = `mount -t tmpfs -o size=512k tmpfs "$0" && exec bun "$1"`;
        const child = Bun.spawn(["unshare", ...(asRoot ? ["-m"] : ["-rm"]), "sh", "-c", script, folder, main], {
          env: { ...process.env, DATABASE_URL: "", DATA_DIR: join(folder, "data"), PORT: "0", HOST: "127.0.0.1" },
          stdout: "pipe",
          stderr: "pipe",
        });
        const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
        const [stdout, code] = await Promise.all([new Response(child.stdout).text(), child.exited]);
        clearTimeout(timer);
        expect(code).toBe(1);
        const failure = JSON.parse(stdout.trim().split("\n").at(-1) ?? "{}");
        expect(failure).toMatchObject({ level: "error", code: "ENOSPC" });
        expect(failure.msg).toStartWith("startup failed: ENOSPC: no space left on device");
        expect(failure.hint).toContain("set DATA_DIR to a folder on a disk with room");
        expect(stdout).not.toContain("[object Object]");
      } finally {
        rmSync(folder, { recursive: true, force: true });
      }
    },
    70_000,
  );
});
