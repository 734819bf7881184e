// The command line: argv in, what to do out. Pure, so `--help` and friends are decided before anything
// reads the environment, opens a database or creates a folder.
import type { TObject } from "@sinclair/typebox";
import pkg from "../package.json";

export type Action =
  | { kind: "serve" }
  | { kind: "healthcheck" }
  | { kind: "receipt-key" }
  | { kind: "help" }
  | { kind: "version" }
  | { kind: "usage-error"; message: string };

/** The version embedded at build time (package.json's, bundled by `bun build --compile`). */
export const VERSION: string = pkg.version;

/** Decides the action for the arguments after the program name (`process.argv.slice(2)`). */
export function parseArgs(args: readonly string[]): Action {
  const [first, ...rest] = args;
  if (args.includes("--help") || args.includes("-h")) return { kind: "help" };
  if (args.includes("--version") || args.includes("-V")) return { kind: "version" };
  if (first !== undefined && rest.length > 0)
    return { kind: "usage-error", message: `unexpected argument: ${rest[0]}` };
  if (first === undefined || first === "serve") return { kind: "serve" };
  if (first === "healthcheck") return { kind: "healthcheck" };
  if (first === "receipt-key") return { kind: "receipt-key" };
  return { kind: "usage-error", message: `unknown ${first.startsWith("-") ? "option" : "command"}: ${first}` };
}

/** The --help text; the environment part is generated from the config schema, so it cannot drift. */
export function usage(schema: TObject): string {
  const rows = Object.entries(schema.properties).map(([name, property]) => {
    const value = (property as { default?: unknown }).default;
    const shown = value === undefined ? "unset" : String(value);
    return [name, shown, (property as { description?: string }).description ?? ""] as const;
  });
  const nameWidth = Math.max(...rows.map(([name]) => name.length));
  const defaultWidth = Math.max(...rows.map(([, shown]) => shown.length));
  const environment = rows.map(
    ([name, shown, text]) => `  ${name.padEnd(nameWidth)}  ${shown.padEnd(defaultWidth)}  ${text}`,
  );
  return [
    `coupon-service ${VERSION}: flash-sale coupon HTTP service`,
    "",
    "Usage: coupon-service [serve | healthcheck | receipt-key] [--help | --version]",
    "",
    "Commands:",
    "  serve        apply migrations, then serve HTTP until SIGTERM/SIGINT (the default)",
    "  healthcheck  exit 0 when GET /health/ready on 127.0.0.1:$PORT answers 200, else 1 with the reason",
    "  receipt-key  print a new Ed25519 key set for RECEIPT_KEYS (private: keep it in a secret store)",
    "",
    "Options:",
    "  -h, --help     print this help and exit",
    "  -V, --version  print the version and exit",
    "",
    "Environment (name, default, meaning):",
    ...environment,
    "",
  ].join("\n");
}
