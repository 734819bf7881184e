import { describe, expect, it } from "bun:test";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pkg from "../package.json";
import { parseArgs, usage, VERSION } from "../src/cli";
import { ConfigSchema } from "../src/config";
import { parseReceiptKeys } from "../src/identity/receipt-keys";
import { runToExit } from "./support/service";

describe("parseArgs", () => {
  it("serves with no arguments or with `serve`", () => {
    expect(parseArgs([])).toEqual({ kind: "serve" });
    expect(parseArgs(["serve"])).toEqual({ kind: "serve" });
  });

  it("recognises healthcheck, help and version, wherever --help stands", () => {
    expect(parseArgs(["healthcheck"])).toEqual({ kind: "healthcheck" });
    expect(parseArgs(["receipt-key"])).toEqual({ kind: "receipt-key" });
    expect(parseArgs(["--help"])).toEqual({ kind: "help" });
    expect(parseArgs(["-h"])).toEqual({ kind: "help" });
    expect(parseArgs(["healthcheck", "--help"])).toEqual({ kind: "help" });
    expect(parseArgs(["--version"])).toEqual({ kind: "version" });
    expect(parseArgs(["-V"])).toEqual({ kind: "version" });
  });

  it("refuses unknown commands, options and extra arguments", () => {
    expect(parseArgs(["--port=80"])).toEqual({ kind: "usage-error", message: "unknown option: --port=80" });
    expect(parseArgs(["migrate"])).toEqual({ kind: "usage-error", message: "unknown command: migrate" });
    expect(parseArgs(["serve", "now"])).toEqual({ kind: "usage-error", message: "unexpected argument: now" });
  });
});

describe("usage", () => {
  it("lists every configuration variable with its default and meaning, from the schema", () => {
    const text = usage(ConfigSchema);
    for (const [name, property] of Object.entries(ConfigSchema.properties)) {
      const { default: value, description } = property as { default?: unknown; description: string };
      const line = text.split("\n").find((l) => l.trimStart().startsWith(`${name} `));
      expect(line).toBeDefined();
      expect(line).toContain(value === undefined ? "unset" : String(value));
      expect(line).toContain(description);
    }
    expect(text).toContain("healthcheck");
    expect(text).toContain("serve");
  });

  it("names the package version", () => {
    expect(VERSION).toBe(pkg.version);
    expect(usage(ConfigSchema)).toContain(`coupon-service ${pkg.version}`);
  });
});

describe("the entry point's command line", () => {
  // In an empty folder, embedded mode: serving would create ./data there and listen on 3999.
  const inEmptyFolder = async (args: string[]) => {
    const cwd = mkdtempSync(join(tmpdir(), "coupon-cli-"));
    try {
      const result = await runToExit(args, { DATABASE_URL: "", PORT: "3999" }, cwd);
      return { ...result, created: readdirSync(cwd) };
    } finally {
      rmSync(cwd, { recursive: true, force: true });
    }
  };

  it("--help prints the usage and exits 0 without creating anything", async () => {
    const { code, stdout, created } = await inEmptyFolder(["--help"]);
    expect({ code, created }).toEqual({ code: 0, created: [] });
    expect(stdout).toBe(usage(ConfigSchema));
  });

  it("--version prints the version and exits 0", async () => {
    const { code, stdout, created } = await inEmptyFolder(["--version"]);
    expect({ code, stdout, created }).toEqual({ code: 0, stdout: `${pkg.version}\n`, created: [] });
  });

  it("receipt-key prints a new key set RECEIPT_KEYS takes, and exits 0 without creating anything", async () => {
    const { code, stdout, created } = await inEmptyFolder(["receipt-key"]);
    expect({ code, created }).toEqual({ code: 0, created: [] });
    const keys = parseReceiptKeys(stdout, undefined, "stdout");
    expect(keys.published).toHaveLength(1);
    expect((await inEmptyFolder(["receipt-key"])).stdout).not.toBe(stdout);
  });

  it("an unknown argument prints the usage to stderr and exits 2", async () => {
    const { code, stdout, stderr, created } = await inEmptyFolder(["--bogus"]);
    expect({ code, stdout, created }).toEqual({ code: 2, stdout: "", created: [] });
    expect(stderr).toStartWith("coupon-service: unknown option: --bogus\n");
    expect(stderr).toContain(usage(ConfigSchema));
  });
});
