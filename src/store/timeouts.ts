// The server-side bounds every statement of the service runs under: statement_timeout and lock_timeout
// at DATABASE_STATEMENT_TIMEOUT_MS, idle_in_transaction_session_timeout at twice that. A direct
// connection takes them as startup parameters. A stock PgBouncer refuses those ("unsupported startup
// parameter"), and one told to ignore them drops them. So before its first statement each client reads
// back what its server applies (connecting again without them if they were refused). Where that is not
// the configured bounds, it sets them itself at the start of every transaction, and runs each statement
// sent outside one in a transaction of its own: a statement's timeout cannot change once it runs.
import type postgres from "postgres";
import { textArray } from "./database";

export const TIMEOUT_NAMES = ["statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout"] as const;
export type TimeoutName = (typeof TIMEOUT_NAMES)[number];
/** Milliseconds per setting. */
export type Timeouts = Record<TimeoutName, number>;

/** The bounds the configuration asks for. */
export function configuredTimeouts(statementTimeoutMs: number): Timeouts {
  return {
    statement_timeout: statementTimeoutMs,
    lock_timeout: statementTimeoutMs,
    idle_in_transaction_session_timeout: statementTimeoutMs * 2,
  };
}

/** What a client found its server applying, and how the bounds are enforced on it. */
export interface TimeoutReport {
  /** `session`: the server applies the bounds to every session; `transaction`: set in each transaction. */
  enforced: "session" | "transaction";
  wanted: Timeouts;
  /** Each setting as the server applies it to a session, and where that comes from (pg_settings.source). */
  server: Record<TimeoutName, { ms: number; source: string }>;
  /** The role the client connects as (where settings of its own would apply). */
  role: string;
  /** The server's refusal of the startup parameters, when it refused them. */
  refused?: string;
}

/** A client whose every statement runs under the configured bounds, and what it found on its server. */
export interface BoundedClient {
  sql: postgres.Sql;
  /** What the client found: read before its first statement, or now if it has sent none yet. */
  timeouts(): Promise<TimeoutReport>;
}

// The statement that sets the bounds for the rest of the transaction it runs in.
const SET_LOCAL = `select ${TIMEOUT_NAMES.map((name, i) => `set_config('${name}', $${i + 1}, true)`).join(", ")}`;

/** Whether `error` is a server (a pooler) refusing a startup parameter it does not know. */
function refusesStartupParameter(error: unknown): error is Error {
  return (
    error instanceof Error &&
    (error as { code?: unknown }).code === "08P01" &&
    error.message.startsWith("unsupported startup parameter")
  );
}

/** Reads what the server applies, dropping the startup parameters from `client` if they are refused. */
async function readTimeouts(client: postgres.Sql, wanted: Timeouts): Promise<TimeoutReport> {
  const read = () =>
    client<{ name: TimeoutName; setting: string; source: string; role: string }[]>`
      select name, setting, source, current_user as role from pg_settings where name = any(${textArray(TIMEOUT_NAMES)}::text[])`;
  let refused: string | undefined;
  let rows: Awaited<ReturnType<typeof read>>;
  try {
    rows = await read();
  } catch (error) {
    if (!refusesStartupParameter(error)) throw error;
    refused = error.message;
    // Read by the driver at every connect: the next connections go without them.
    const sent = client.options.connection as Record<string, unknown>;
    for (const name of TIMEOUT_NAMES) delete sent[name];
    rows = await read();
  }
  const server = Object.fromEntries(rows.map((row) => [row.name, { ms: Number(row.setting), source: row.source }]));
  const report = { wanted, server: server as TimeoutReport["server"], role: rows[0]?.role ?? "", refused };
  const applied = TIMEOUT_NAMES.every((name) => report.server[name]?.ms === wanted[name]);
  return { enforced: applied ? "session" : "transaction", ...report };
}

/** A query that runs once awaited, as postgres.js queries do; `values()` asks for rows as arrays. */
function deferredQuery(run: (values: boolean) => Promise<unknown>) {
  let values = false;
  let started: Promise<unknown> | undefined;
  const start = () => {
    started ??= run(values);
    return started;
  };
  const query = {
    values() {
      values = true;
      return query;
    },
    // biome-ignore lint/suspicious/noThenProperty: a thenable, as every postgres.js query is
    then: (resolve?: (value: unknown) => unknown, reject?: (error: unknown) => unknown) =>
      start().then(resolve, reject),
    catch: (reject: (error: unknown) => unknown) => start().catch(reject),
    finally: (done: () => void) => start().finally(done),
  };
  return query;
}

type Sendable = { values(): unknown };

/**
 * Wraps `client` so its every statement runs under `wanted`: until its first statement has read what
 * the server applies, statements wait for that reading; then they go straight to the server where it
 * applies the bounds, and otherwise each transaction begins by setting them, and each statement sent
 * outside a transaction gets one of its own. Reached through drizzle (unsafe, begin) or as a tag.
 */
export function boundedClient(client: postgres.Sql, wanted: Timeouts): BoundedClient {
  const settings = TIMEOUT_NAMES.map((name) => String(wanted[name]));
  let enforced: TimeoutReport["enforced"] | undefined;
  let reading: Promise<TimeoutReport> | undefined;
  const timeouts = () => {
    reading ??= readTimeouts(client, wanted).then(
      (report) => {
        enforced = report.enforced;
        return report;
      },
      (error) => {
        reading = undefined; // the next statement reads again
        throw error;
      },
    );
    return reading;
  };
  /** Runs `fn` in a transaction that first sets the bounds, or as is where the server applies them. */
  const bounded = async <T>(mode: string, fn: (sql: postgres.TransactionSql) => T | Promise<T>) => {
    await timeouts();
    if (enforced === "session") return client.begin(mode, fn);
    return client.begin(mode, async (tx) => {
      await tx.unsafe(SET_LOCAL, settings);
      return fn(tx);
    });
  };
  /** One statement: built by `send` on the client, or on a transaction of its own. */
  const statement = (send: (sql: postgres.Sql | postgres.TransactionSql) => Sendable) => {
    if (enforced === "session") return send(client);
    return deferredQuery(async (values) => {
      await timeouts();
      const sendOn = (sql: postgres.Sql | postgres.TransactionSql) => (values ? send(sql).values() : send(sql));
      if (enforced === "session") return sendOn(client);
      return bounded("", (tx) => sendOn(tx));
    });
  };
  const sql = new Proxy(client, {
    get(target, property, receiver) {
      if (property === "unsafe")
        return (query: string, parameters?: never[], options?: postgres.UnsafeQueryOptions) =>
          statement((on) => on.unsafe(query, parameters, options));
      if (property === "begin")
        return (
          ...args: [string, (sql: postgres.TransactionSql) => unknown] | [(sql: postgres.TransactionSql) => unknown]
        ) => (args.length === 1 ? bounded("", args[0]) : bounded(args[0], args[1]));
      return Reflect.get(target, property, receiver);
    },
    apply(target, self, args: Parameters<postgres.Sql>) {
      const [strings, ...rest] = args as [TemplateStringsArray, ...never[]];
      // A tagged statement; anything else (an identifier, a helper) builds no statement.
      if (!Array.isArray(strings) || !("raw" in strings)) return Reflect.apply(target, self, args);
      return statement((on) => (on as postgres.Sql)(strings, ...rest));
    },
  });
  return { sql, timeouts };
}

/** The start-up log line that says how the bounds are enforced, and what would make it cheaper. */
export function describeTimeouts(report: TimeoutReport): {
  level: "info" | "warn";
  msg: string;
  fields: Record<string, unknown>;
} {
  const fields: Record<string, unknown> = Object.fromEntries(
    TIMEOUT_NAMES.map((name) => [`${name}_ms`, report.wanted[name]]),
  );
  if (report.refused) fields.refused = report.refused;
  const sources = [...new Set(TIMEOUT_NAMES.map((name) => report.server[name]?.source))];
  if (report.enforced === "session") {
    const byClient = sources.length === 1 && sources[0] === "client";
    return {
      level: "info",
      msg: byClient ? "database timeouts set at connect" : "database timeouts applied by the server's settings",
      fields: { ...fields, source: sources.join(",") },
    };
  }
  const role = `"${report.role.replaceAll('"', '""')}"`.replace(/^"([a-z_][a-z0-9_]*)"$/, "$1");
  return {
    level: "warn",
    msg: "database timeouts set in every transaction: the server's sessions do not have them",
    fields: {
      ...fields,
      server: TIMEOUT_NAMES.map((name) => `${name}=${report.server[name]?.ms}ms (${report.server[name]?.source})`).join(
        ", ",
      ),
      cost: "one more round trip per transaction, three more per statement outside one",
      hint: `set them on the role, and each connection has them for free: ${TIMEOUT_NAMES.map(
        (name) => `ALTER ROLE ${role} SET ${name} = '${report.wanted[name]}ms'`,
      ).join("; ")}`,
    },
  };
}
