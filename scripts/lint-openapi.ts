// `bun run lint:openapi`: the OpenAPI document as the service serves it (GET /docs/json, from the app
// built in-process: no database, no port) must pass Redocly's recommended rules with no error (warnings
// are printed). Runs offline: Redocly's telemetry and update check are turned off.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createApp } from "../src/app";
import { loadConfig } from "../src/config";
import type { Claimer } from "../src/domain/claim";
import { createLogger } from "../src/log";
import { createMetrics } from "../src/metrics/metrics";
import type { Database } from "../src/store/database";
import { createReadSlots } from "../src/store/read-slots";

// Serving the document touches neither the database nor the claimer.
const app = createApp({
  db: {} as Database,
  claimer: {} as Claimer,
  log: createLogger("silent"),
  metrics: createMetrics(),
  config: loadConfig({}),
  idempotencyTtlMs: 0,
  readSlots: createReadSlots(1),
});
const response = await app.handle(new Request("http://localhost/docs/json"));
if (response.status !== 200) throw new Error(`GET /docs/json answered ${response.status}`);

const folder = mkdtempSync(join(tmpdir(), "openapi-"));
const file = join(folder, "openapi.json");
writeFileSync(file, JSON.stringify(await response.json(), null, 2));
try {
  const lint = Bun.spawnSync(
    [
      process.execPath,
      "x",
      "--bun",
      "redocly",
      "lint",
      "--extends=recommended",
      // Not ours to fix: the service has no licence to name, and health probes have no client error.
      "--skip-rule=info-license",
      "--skip-rule=operation-4xx-response",
      "--max-problems=1000",
      file,
    ],
    {
      stdout: "inherit",
      stderr: "inherit",
      env: { ...process.env, REDOCLY_TELEMETRY: "off", REDOCLY_SUPPRESS_UPDATE_NOTICE: "true" },
    },
  );
  process.exitCode = lint.exitCode;
} finally {
  rmSync(folder, { recursive: true, force: true });
}
