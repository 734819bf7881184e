// The one logger: JSON lines on stdout (no worker-thread transports, which break in compiled binaries).

const levels = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 } as const;
export type LogLevel = keyof typeof levels;
export const logLevels = Object.keys(levels) as LogLevel[];

/** LOG_REQUESTS: which requests get their line at info (5xx only for `errors`); see requestLogLevel. */
export const requestLogModes = ["all", "errors", "none"] as const;
export type RequestLogMode = (typeof requestLogModes)[number];

// Polled or fetched by machines and browsers, not people: their lines would drown the traffic's.
const QUIET_PATHS = /^\/(health\/|docs\/assets\/)/;

/**
 * The level of a request's log line, or undefined for none: probes and docs assets only at debug,
 * `errors` keeps 5xx (4xx are answers the client caused, and at flash-sale rates mostly the expected
 * SOLD_OUT and ALREADY_CLAIMED), `none` keeps nothing (unexpected errors keep their own error line).
 */
export function requestLogLevel(mode: RequestLogMode, path: string, status: number): "info" | "debug" | undefined {
  if (mode === "none") return undefined;
  if (QUIET_PATHS.test(path)) return "debug";
  if (mode === "errors" && status < 500) return undefined;
  return "info";
}

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

/** Creates a logger that drops lines below `level`; `write` is replaceable so tests can capture lines. */
export function createLogger(
  level: LogLevel = "info",
  write: (line: string) => void = (line) => process.stdout.write(`${line}\n`),
): Logger {
  const threshold = levels[level];
  const emit = (lvl: Exclude<LogLevel, "silent">) => (msg: string, fields?: Record<string, unknown>) => {
    if (levels[lvl] < threshold) return;
    write(JSON.stringify({ time: new Date().toISOString(), level: lvl, msg, ...fields }));
  };
  return { debug: emit("debug"), info: emit("info"), warn: emit("warn"), error: emit("error") };
}

/** Drops drizzle's "\nparams: …" from a message or stack (up to the stack's first frame): user data, and long. */
export function withoutParams(text: string): string {
  return text.replace(/\nparams: [\s\S]*?(?=\n {4}at |$)/, "");
}

/** One thrown value as a log line shows it: its kind, code, words and the cause under it. */
export interface ErrorDescription {
  name: string;
  message: string;
  code?: string;
  stack?: string;
  cause?: ErrorDescription;
}

type Thrown = { name?: unknown; message?: unknown; code?: unknown; errno?: unknown; stack?: unknown; cause?: unknown };

/** `value` described with the causes under it (at most five deep), whatever it is. */
export function describeError(value: unknown, depth = 0): ErrorDescription {
  const description = describeOne(value);
  const cause = (value as Thrown | null)?.cause;
  if (cause !== undefined && cause !== value && depth < 5) description.cause = describeError(cause, depth + 1);
  return description;
}

/** `value` alone, whatever it is: an Error, a driver's error object, a plain object, a string. */
export function describeOne(value: unknown): ErrorDescription {
  if (value === null || typeof value !== "object") return { name: typeof value, message: String(value) };
  const e = value as Thrown;
  const code = typeof e.code === "string" ? e.code : typeof e.errno === "number" ? `errno ${e.errno}` : undefined;
  // Named by shape first: the compiled binary is minified, so class names are not the source's.
  const name =
    "severity" in e
      ? "PostgresError"
      : "query" in e && "params" in e
        ? "DrizzleQueryError"
        : typeof e.name === "string" && e.name
          ? e.name
          : (value.constructor?.name ?? "Object");
  let message = typeof e.message === "string" ? withoutParams(e.message) : "";
  if (!message) message = code ?? (safeJson(value) || name);
  const description: ErrorDescription = { name, message, ...(code ? { code } : {}) };
  if (typeof e.stack === "string") description.stack = withoutParams(e.stack);
  return description;
}

/** One description on one line: "PostgresError 57014: canceling statement due to statement timeout". */
export function errorLine(description: ErrorDescription): string {
  const code = description.code && description.code !== description.message ? ` ${description.code}` : "";
  return `${description.name}${code}: ${description.message.replace(/\s+/g, " ").trim()}`;
}

function safeJson(value: object): string {
  try {
    return JSON.stringify(value) ?? "";
  } catch {
    return "";
  }
}

/** The innermost cause of a description, on one line: "PostgresError 57014: canceling statement …". */
export function rootCause(description: ErrorDescription): string {
  let root = description;
  while (root.cause) root = root.cause;
  return errorLine(root);
}

/**
 * Serialises a thrown value for a log line: `err` with its chain of causes (stacks kept, query
 * parameters never), and `cause`, the innermost one in a line, so every error line names why.
 */
export function errorFields(error: unknown): Record<string, unknown> {
  const err = describeError(error);
  return { err, cause: rootCause(err) };
}
