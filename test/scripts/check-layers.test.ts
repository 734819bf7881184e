import { afterAll, describe, expect, it } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";

const script = join(import.meta.dir, "../../scripts/check-layers.ts");
const folders: string[] = [];
afterAll(() => {
  for (const folder of folders) rmSync(folder, { recursive: true, force: true });
});

/** Runs the checker on a fixture tree whose files are given by their path under src/. */
function check(files: Record<string, string>) {
  const folder = mkdtempSync(join(tmpdir(), "check-layers-"));
  folders.push(folder);
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(folder, "src", path)), { recursive: true });
    writeFileSync(join(folder, "src", path), text);
  }
  const run = Bun.spawnSync([process.execPath, script, "src"], { cwd: folder });
  const lines = `${run.stdout}${run.stderr}`.trim().split("\n");
  return { exitCode: run.exitCode, lines };
}

// One file per layer, each importing only what the table allows, in every form the checker reads.
const kept: Record<string, string> = {
  "domain/claim.ts": 'export type ClaimRequest = { coupon: string };\nexport * from "./outcomes";\n',
  "domain/outcomes.ts": "export const OUTCOMES = [];\n",
  "domain/index.ts": 'export * from "./claim";\n',
  "log.ts": 'import { loadConfig } from "./config.ts";\nexport const log = loadConfig;\n',
  "config.ts": 'import pkg from "../package.json";\nexport const loadConfig = () => pkg;\n',
  "tracing/tracing.ts":
    'import { log } from "../log";\nimport type { ClaimRequest } from "../domain";\nexport { log };\n',
  "metrics/metrics.ts": 'import { OUTCOMES } from "../domain/outcomes";\nexport const metrics = OUTCOMES;\n',
  "store/migrations.ts": 'import init from "../../drizzle/0000_init.sql" with { type: "text" };\nexport { init };\n',
  "store/claims.ts": [
    'import { drizzle } from "drizzle-orm";',
    'import { init } from "./migrations";',
    '// import { claim } from "../engine/claimer";',
    "const text = \"import { claim } from '../http/routes'\";",
    "export const store = [drizzle, init, text];",
  ].join("\n"),
  "engine/claimer.ts": 'import { store } from "../store/claims";\nexport const claim = store;\n',
  "http/routes.ts": 'import { claim } from "../engine/claimer";\nimport { metrics } from "../metrics/metrics";\n',
  "app.ts": 'import "./http/routes";\nimport { log } from "./tracing/tracing";\nexport { log };\n',
  "main.ts": 'const app = await import("./app");\n',
};

describe("check-layers", () => {
  it("passes a tree that keeps the layers, naming no file", () => {
    const { exitCode, lines } = check(kept);
    expect(lines).toEqual(["check-layers: 13 files in 9 layers, 13 relative imports, all allowed"]);
    expect(exitCode).toBe(0);
  });

  it("refuses a store file importing an engine file, naming both", () => {
    const { exitCode, lines } = check({
      ...kept,
      "store/claims.ts": 'import { claim } from "../engine/claimer";\nexport const store = claim;\n',
      "engine/index.ts": "export const engine = 1;\n",
      "store/read.ts": 'import { engine } from "../engine";\nexport const read = engine;\n',
    });
    expect(lines).toEqual([
      "src/store/claims.ts imports src/engine/claimer.ts: store may import only domain, base",
      "src/store/read.ts imports src/engine/index.ts: store may import only domain, base",
      "check-layers: 2 violation(s); the layers are the table in scripts/check-layers.ts",
    ]);
    expect(exitCode).toBe(1);
  });

  it("refuses a domain file importing base", () => {
    const { exitCode, lines } = check({
      ...kept,
      "domain/outcomes.ts": 'import { log } from "../log";\nexport const OUTCOMES = [log];\n',
    });
    expect(lines[0]).toBe("src/domain/outcomes.ts imports src/log.ts: domain may import no other layer");
    expect(lines).toHaveLength(2);
    expect(exitCode).toBe(1);
  });

  it("counts type-only imports and re-exports across layers", () => {
    const { exitCode, lines } = check({
      ...kept,
      "engine/types.ts": 'import type { Routes } from "../http/routes";\nexport type T = Routes;\n',
      "engine/inline.ts": 'import { type Routes } from "../http/routes";\nexport type U = Routes;\n',
      "store/types.ts": 'export type { Claim } from "../engine/claimer";\n',
    });
    expect(lines.slice(0, -1)).toEqual([
      "src/engine/inline.ts imports src/http/routes.ts: engine may import only domain, base, store",
      "src/engine/types.ts imports src/http/routes.ts: engine may import only domain, base, store",
      "src/store/types.ts imports src/engine/claimer.ts: store may import only domain, base",
    ]);
    expect(exitCode).toBe(1);
  });

  it("counts dynamic imports, in code and in types", () => {
    const { exitCode, lines } = check({
      ...kept,
      "store/later.ts": 'export const later = () => import("../http/routes");\n',
      "metrics/named.ts": 'export type Claimer = import("../engine/claimer.ts").Claimer;\n',
    });
    expect(lines.slice(0, -1)).toEqual([
      "src/metrics/named.ts imports src/engine/claimer.ts: metrics may import only domain",
      "src/store/later.ts imports src/http/routes.ts: store may import only domain, base",
    ]);
    expect(exitCode).toBe(1);
  });

  it("reports a file in no layer, and an import that names no file", () => {
    const { exitCode, lines } = check({
      ...kept,
      "coupons/claims.ts": "export const claims = 1;\n",
      "http/routes.ts": 'import { claims } from "../coupons/claims";\nimport { gone } from "../db/client";\n',
    });
    expect(lines.slice(0, -1)).toEqual([
      "src/coupons/claims.ts belongs to no layer: add it to the table in scripts/check-layers.ts",
      'src/http/routes.ts imports "../db/client", which resolves to no .ts file',
    ]);
    expect(exitCode).toBe(1);
  });
});
