// `bun scripts/check-layers.ts [root]` (run by `bun run lint` after Biome): every .ts file under root
// (default src/) belongs to one layer below, and imports only from its own layer and the layers it may
// import, so the centre (domain) never learns of the edges (HTTP, SQL). Import cycles are Biome's
// `noImportCycles`. Prints one line per violation and exits 1; exits 0 with a one-line summary.
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, extname, join, relative, resolve, sep } from "node:path";
import ts from "typescript";

type Layer = { paths: string[]; mayImport: string[] };

// The layers, centre first. Paths are relative to the root (src/); one ending in "/" is a folder and all
// beneath it. A layer may always import itself; `mayImport` names the other layers it may import.
const LAYERS = {
  // The vocabulary (claim request/result, outcomes, errors, coupon shapes): the centre leans on nothing.
  domain: { paths: ["domain/"], mayImport: [] },
  // Settings and logging: every layer reads them, so they know none of the layers.
  base: { paths: ["log.ts", "config.ts", "config-table.ts", "cli.ts", "assets.d.ts"], mayImport: [] },
  // Spans and sampling: configured from settings, named in the domain's words, called by the edge.
  tracing: { paths: ["tracing/"], mayImport: ["base", "domain"] },
  // Counters named after the domain's outcomes; they know nothing of where they are counted.
  metrics: { paths: ["metrics/"], mayImport: ["domain"] },
  // Keys, receipts and tokens (signing claims, verifying callers): known to the edge, knowing none of it.
  identity: { paths: ["identity/"], mayImport: ["domain", "base"] },
  // Connections, schema, migrations, SQL, change feed: keeps the domain's facts, knows no engine or HTTP.
  store: { paths: ["store/"], mayImport: ["domain", "base"] },
  // Claimer, group commit, answers from memory, key turns: decides claims through the store, knows no HTTP.
  engine: { paths: ["engine/"], mayImport: ["domain", "base", "store"] },
  // The one HTTP edge (routes, models, docs, problems): the outer room, calling inward and never called.
  http: { paths: ["http/"], mayImport: ["domain", "base", "store", "engine", "metrics", "tracing", "identity"] },
  // Start-up and wiring: the one place that knows every layer and puts them together.
  wiring: {
    paths: ["main.ts", "app.ts", "startup.ts", "healthcheck.ts"],
    mayImport: ["domain", "base", "tracing", "metrics", "store", "engine", "http", "identity"],
  },
} satisfies Record<string, Layer>;

type LayerName = keyof typeof LAYERS;
const layers: [LayerName, Layer][] = Object.entries(LAYERS) as [LayerName, Layer][];
for (const [name, layer] of layers) {
  for (const other of layer.mayImport) {
    if (!(other in LAYERS)) throw new Error(`layer ${name} may import "${other}", which is not a layer`);
  }
}

const rootArg = (process.argv[2] ?? "src").replace(/[\\/]+$/, "");
const root = resolve(rootArg);
if (!existsSync(root) || !statSync(root).isDirectory()) {
  console.error(`check-layers: ${rootArg} is not a folder`);
  process.exit(2);
}

/** The path of a file under root, with forward slashes: what the table's paths are written against. */
const underRoot = (file: string) => relative(root, file).split(sep).join("/");
/** A file as printed: under the root as it was named on the command line, or relative to here. */
const shown = (file: string) => {
  const inner = underRoot(file);
  return inner.startsWith("../") ? relative(".", file) : `${rootArg}/${inner}`;
};

function layerOf(file: string): LayerName | undefined {
  const path = underRoot(file);
  for (const [name, layer] of layers) {
    if (layer.paths.some((p) => (p.endsWith("/") ? path.startsWith(p) : path === p))) return name;
  }
  return undefined;
}

const isFile = (path: string) => existsSync(path) && statSync(path).isFile();

/** The .ts file a relative import names (`./x`, `./x.ts`, `./x.js`, `./dir` for dir/index.ts); null for
 * an asset (`../package.json`, `x.sql`); undefined when it names nothing. */
function resolveImport(from: string, specifier: string): string | null | undefined {
  const target = resolve(dirname(from), specifier);
  const candidates = [target, `${target}.ts`, join(target, "index.ts"), target.replace(/\.js$/, ".ts")];
  const found = candidates.find((c) => c.endsWith(".ts") && isFile(c));
  if (found) return found;
  return isFile(target) || extname(target) !== "" ? null : undefined;
}

/** Every relative specifier in a file: static, type-only and re-exporting imports, `import("...")`, and
 * `require("...")`; TypeScript's own scanner, so comments and strings that look like imports are not. */
function relativeImports(file: string): string[] {
  const { importedFiles } = ts.preProcessFile(readFileSync(file, "utf8"), true, true);
  return importedFiles.map((f) => f.fileName).filter((name) => name.startsWith("./") || name.startsWith("../"));
}

const files = [...new Bun.Glob("**/*.ts").scanSync({ cwd: root })].sort().map((f) => join(root, f));
if (files.length === 0) {
  console.error(`check-layers: no .ts file under ${rootArg}`);
  process.exit(2);
}

function violation(file: string, layer: LayerName, allowed: string[], target: string): string | undefined {
  const targetLayer = layerOf(target);
  if (targetLayer === layer || (targetLayer && allowed.includes(targetLayer))) return undefined;
  // A file under root in no layer is reported once, as itself; one outside root is reported here.
  if (!targetLayer && !underRoot(target).startsWith("../")) return undefined;
  const rule = allowed.length > 0 ? `may import only ${allowed.join(", ")}` : "may import no other layer";
  const where = targetLayer ? "" : `, outside ${rootArg}/`;
  return `${shown(file)} imports ${shown(target)}${where}: ${layer} ${rule}`;
}

const violations: string[] = [];
let checked = 0;
for (const file of files) {
  const layer = layerOf(file);
  if (!layer) {
    violations.push(`${shown(file)} belongs to no layer: add it to the table in scripts/check-layers.ts`);
    continue;
  }
  const allowed: string[] = LAYERS[layer].mayImport;
  const reported = new Set<string>();
  for (const specifier of relativeImports(file)) {
    const target = resolveImport(file, specifier);
    if (target === null) continue;
    checked++;
    const line =
      target === undefined
        ? `${shown(file)} imports "${specifier}", which resolves to no .ts file`
        : violation(file, layer, allowed, target);
    if (line && !reported.has(line)) {
      reported.add(line);
      violations.push(line);
    }
  }
}

if (violations.length > 0) {
  for (const line of violations) console.error(line);
  console.error(`check-layers: ${violations.length} violation(s); the layers are the table in scripts/check-layers.ts`);
  process.exit(1);
}
console.log(`check-layers: ${files.length} files in ${layers.length} layers, ${checked} relative imports, all allowed`);
