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

/** Serialises an unknown thrown value for a log line, keeping the stack. */
export function errorFields(error: unknown): Record<string, unknown> {
  if (error instanceof Error) return { err: { name: error.name, message: error.message, stack: error.stack } };
  return { err: { message: String(error) } };
}
