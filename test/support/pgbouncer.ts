// A real PgBouncer in transaction pooling in front of the test PostgreSQL, started by the test that
// needs it: its own config and userlist in a temp folder, a free port, stopped by the test.
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { freePort } from "./ports";

export interface PgBouncer {
  /** A copy of the database URL it was started for, pointing at PgBouncer. */
  url: string;
  /** Its admin console (`SHOW POOLS`, …): the `pgbouncer` database, as the same user (admin_users). */
  adminUrl: string;
  stop(): Promise<void>;
}

export interface PgBouncerOptions {
  /** Server connections per database and user (`default_pool_size`). */
  poolSize?: number;
  /**
   * Startup parameters PgBouncer drops instead of refusing the client (`ignore_startup_parameters`);
   * default STOCK_IGNORED_PARAMETERS.
   */
  ignoreStartupParameters?: readonly string[];
}

/** ignore_startup_parameters as PgBouncer is usually deployed: it refuses the service's timeouts. */
export const STOCK_IGNORED_PARAMETERS = ["extra_float_digits"];
/** The timeouts src/store/client.ts sends at connect, which PgBouncer does not track itself. */
export const SERVICE_STARTUP_PARAMETERS = ["statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout"];

/** The pgbouncer executable (Debian installs it in /usr/sbin, often not on a user's PATH), or null. */
export function findPgBouncer(): string | null {
  return Bun.which("pgbouncer", { PATH: `${process.env.PATH ?? ""}:/usr/sbin:/usr/local/sbin` });
}

/** Whether something accepts TCP connections on 127.0.0.1:`port`. */
const accepts = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    const answer = (yes: boolean) => () => {
      socket.destroy();
      resolve(yes);
    };
    socket.once("connect", answer(true)).once("error", answer(false));
  });

/** Starts PgBouncer (`pool_mode = transaction`) in front of the server `databaseUrl` names. */
export async function startPgBouncer(databaseUrl: string, options: PgBouncerOptions = {}): Promise<PgBouncer> {
  // The free port can be taken by someone else before PgBouncer binds it: then try another one.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnFreePort(databaseUrl, options);
    } catch (error) {
      if (attempt === 3) throw error;
    }
  }
}

async function startOnFreePort(databaseUrl: string, options: PgBouncerOptions): Promise<PgBouncer> {
  const bin = findPgBouncer();
  if (!bin) throw new Error("pgbouncer is not installed (apt-get install -y pgbouncer)");
  const target = new URL(databaseUrl);
  const user = decodeURIComponent(target.username || "postgres");
  const password = decodeURIComponent(target.password);
  // PgBouncer refuses to run as root: under root (CI), it runs as the postgres user, so its folder
  // must be readable by others. Nothing secret is in it beyond the test server's own password.
  const dir = mkdtempSync(join(tmpdir(), "pgbouncer-"));
  chmodSync(dir, 0o755);
  const port = await freePort();
  const server = [`host=${target.hostname}`, `port=${target.port || 5432}`, `user=${user}`];
  if (password) server.push(`password=${password}`);
  const ini = [
    "[databases]",
    `* = ${server.join(" ")}`,
    "[pgbouncer]",
    "listen_addr = 127.0.0.1",
    `listen_port = ${port}`,
    "unix_socket_dir =",
    "auth_type = trust",
    `auth_file = ${join(dir, "userlist.txt")}`,
    "pool_mode = transaction",
    `default_pool_size = ${options.poolSize ?? 3}`,
    "max_client_conn = 1000",
    `ignore_startup_parameters = ${(options.ignoreStartupParameters ?? STOCK_IGNORED_PARAMETERS).join(",")}`,
    `admin_users = ${user}`,
    "",
  ].join("\n");
  writeFileSync(join(dir, "pgbouncer.ini"), ini, { mode: 0o644 });
  writeFileSync(join(dir, "userlist.txt"), `"${user}" ""\n`, { mode: 0o644 });

  const command = [bin, join(dir, "pgbouncer.ini")];
  const asRoot = process.getuid?.() === 0;
  const child: Subprocess<"ignore", "ignore", "pipe"> = Bun.spawn(
    asRoot ? ["setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups", ...command] : command,
    { stdin: "ignore", stdout: "ignore", stderr: "pipe" },
  );
  let log = "";
  const reading = (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of child.stderr) log += decoder.decode(chunk);
  })();

  const stop = async () => {
    // SIGTERM is PgBouncer's immediate shutdown (SIGINT would wait for every client to finish).
    child.kill("SIGTERM");
    const killer = setTimeout(() => child.kill("SIGKILL"), 5000);
    await child.exited;
    clearTimeout(killer);
    await reading;
    rmSync(dir, { recursive: true, force: true });
  };
  for (let waited = 0; !(await accepts(port)); waited += 50) {
    if (child.exitCode !== null || waited > 10_000) {
      await stop();
      throw new Error(`pgbouncer did not start (exit ${child.exitCode}):\n${log}`);
    }
    await Bun.sleep(50);
  }
  const url = new URL(databaseUrl);
  url.hostname = "127.0.0.1";
  url.port = String(port);
  const adminUrl = new URL(url);
  adminUrl.pathname = "/pgbouncer";
  return { url: url.href, adminUrl: adminUrl.href, stop };
}
