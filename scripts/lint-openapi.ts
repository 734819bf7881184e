// `bun run lint:openapi`: the OpenAPI document as the service serves it (GET /docs/json, from the app
// built in-process: no database, no port), without settings and with bearer JWTs (AUTH_*, an admin scope
// and ADMIN_TOKEN), must pass Redocly's recommended rules with no error (warnings are printed). Runs
// offline: Redocly's telemetry and update check are turned off.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exportJWK, generateKeyPair } from "jose";
import { createApp } from "../src/app";
import { loadConfig } from "../src/config";
import type { Claimer } from "../src/domain/claim";
import { type TokenVerifier, tokenVerifierFrom } from "../src/identity/tokens";
import { createLogger } from "../src/log";
import { createMetrics } from "../src/metrics/metrics";
import type { Database } from "../src/store/database";
import { createReadSlots } from "../src/store/read-slots";

/** The document served by the app of `env`'s settings; serving it touches neither the database nor the claimer. */
async function documentOf(env: Record<string, string>, tokens?: TokenVerifier): Promise<string> {
  const app = createApp({
    db: {} as Database,
    claimer: {} as Claimer,
    log: createLogger("silent"),
    metrics: createMetrics(),
    config: loadConfig(env),
    idempotencyTtlMs: 0,
    readSlots: createReadSlots(1),
    tokens,
  });
  const response = await app.handle(new Request("http://localhost/docs/json"));
  if (response.status !== 200) throw new Error(`GET /docs/json answered ${response.status}`);
  return JSON.stringify(await response.json(), null, 2);
}

const folder = mkdtempSync(join(tmpdir(), "openapi-"));
const file = join(folder, "openapi.json");
const withAuth = join(folder, "openapi-auth.json");
try {
  writeFileSync(file, await documentOf({}));
  // With bearer JWTs: the keys from a file, so no identity provider needs to answer.
  const { publicKey } = await generateKeyPair("RS256");
  const jwks = join(folder, "jwks.json");
  writeFileSync(jwks, JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: "lint", alg: "RS256" }] }));
  const env = {
    ADMIN_TOKEN: "lint-admin-token-0123456789",
    AUTH_ISSUER: "https://id.example/",
    AUTH_AUDIENCE: "coupon-service",
    AUTH_JWKS_FILE: jwks,
    AUTH_ADMIN_SCOPE: "coupons:admin",
  };
  writeFileSync(withAuth, await documentOf(env, await tokenVerifierFrom(loadConfig(env), createLogger("silent"))));
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
      withAuth,
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
