// What a failed start-up logs: the driver's own words (drizzle wraps them in "Failed query: …"), the
// chain of causes, and what to do. Never query parameters: drizzle's message carries them.
import { describeOne, errorLine, withoutParams } from "./log";

export { withoutParams };

export interface StartupFailure {
  msg: string;
  fields: Record<string, unknown>;
}

interface ErrorLike {
  name?: string;
  message?: string;
  code?: string;
  address?: string;
  port?: number;
  hostname?: string;
  /** The file or folder a file system failure is about. */
  path?: string;
  stack?: string;
  cause?: unknown;
}

/** The error and its causes, outermost first (at most 8, so a cycle cannot loop). */
function causeChain(error: unknown): ErrorLike[] {
  const chain: ErrorLike[] = [];
  for (let e = error; e && typeof e === "object" && chain.length < 8; e = (e as ErrorLike).cause) {
    chain.push(e as ErrorLike);
  }
  return chain.length > 0 ? chain : [{ message: String(error) }];
}

const oneLine = (text: string) => withoutParams(text).replace(/\s+/g, " ").trim();
// A failed DDL statement is quoted whole in drizzle's message; its start says which one it was.
const clip = (text: string) => (text.length > 200 ? `${text.slice(0, 200)}…` : text);

/** The advice for the first cause it recognises, innermost first (the driver's code is the telling one). */
function hintFor(chain: ErrorLike[]): string | undefined {
  for (const e of [...chain].reverse()) {
    const where = e.address && e.port ? `${e.address}:${e.port}` : (e.hostname ?? e.address ?? "the host");
    switch (e.code) {
      case "ECONNREFUSED":
        return `nothing accepts connections at ${where}: is PostgreSQL running there, and are DATABASE_URL's host and port right?`;
      case "ENOTFOUND":
      case "EAI_AGAIN":
        return "the host name in DATABASE_URL does not resolve: check its spelling and the DNS";
      case "CONNECT_TIMEOUT":
      case "ETIMEDOUT":
      case "EHOSTUNREACH":
      case "ENETUNREACH":
        return `no answer from ${where} within DATABASE_CONNECT_TIMEOUT_MS: check the host, the port and firewalls`;
      case "3D000":
        return "the database named in DATABASE_URL does not exist: create it first (CREATE DATABASE …) or fix the name";
      case "28000":
      case "28P01":
        return "PostgreSQL refused the login: check the user and password in DATABASE_URL (and pg_hba.conf)";
      case "42501":
        return "the role may not create the service's tables: grant it CREATE on the database and on schema public, or use a role that owns them";
      case "42P06":
      case "42P07":
      case "42710":
        return "the database holds tables of another application: use an empty database (the service creates its own tables)";
      case "53300":
        return "PostgreSQL has no connection slot left: lower DATABASE_POOL_MAX or raise max_connections";
      case "57P03":
        return "PostgreSQL is starting up or in recovery: retry shortly";
      case "EADDRINUSE":
        return "another process already listens on HOST:PORT: stop it or set PORT to a free port";
      case "ENOSPC":
      case "EDQUOT":
        return `no space left where the embedded database keeps its files (${e.path ?? "DATA_DIR"}): free some, or set DATA_DIR to a folder on a disk with room`;
      case "EROFS":
        return `${e.path ?? "DATA_DIR"} is on a read-only file system: set DATA_DIR to a writable folder (a volume, in a container)`;
      case "EACCES":
        if (e.path)
          return `not allowed to write ${e.path}: give the service's user write access, or set DATA_DIR to a folder it owns`;
        return "not allowed to listen on PORT (ports below 1024 need privileges): set PORT to 1024 or above";
    }
  }
  return undefined;
}

/** The log line for an error that ended start-up. */
export function describeStartupFailure(error: unknown): StartupFailure {
  const chain = causeChain(error);
  // Each link as the log describes any thrown value: an object without a message (a file system's
  // ErrnoError) by its code, never "[object Object]".
  const described = chain.map(describeOne);
  const code = chain.findLast((e) => typeof e.code === "string")?.code;
  const hint = hintFor(chain);
  const causes = described.map((e) => errorLine({ ...e, message: clip(oneLine(e.message)) }));
  const fields: Record<string, unknown> = { ...(code ? { code } : {}), ...(hint ? { hint } : {}), causes };
  // An unrecognised failure keeps its stack (without parameters): it is a bug to look into.
  if (!hint && chain[0]?.stack) fields.stack = withoutParams(chain[0].stack);
  // The innermost words: a cause without any (only a code) is named by the link that wraps it.
  const words = chain.findLast((e) => typeof e.message === "string" && e.message !== "")?.message;
  return { msg: `startup failed: ${oneLine(words ?? described.at(-1)?.message ?? String(error))}`, fields };
}
