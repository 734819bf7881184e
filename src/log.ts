// The one logger: JSON lines on stdout (no worker-thread transports, which break in compiled binaries).

const levels = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 } as const;
export type LogLevel = keyof typeof levels;
export const logLevels = Object.keys(levels) as LogLevel[];

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
