// Receipt keys in the real process: embedded mode makes its key on the first start and keeps it
// across restarts (receipts verified with jose against the running service's JWK Set), and a
// malformed key set stops the start with the problem, never the private key.
import { afterAll, describe, expect, it } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRemoteJWKSet, jwtVerify } from "jose";
import { GENERATED_KEYS_FILE } from "../../src/identity/receipt-keys";
import { ed25519Jwk, keySet } from "../support/receipt-keys";
import { runToExit, type Service, startService } from "../support/service";

const folder = mkdtempSync(join(tmpdir(), "receipt-service-"));
afterAll(() => rmSync(folder, { recursive: true, force: true }));

const embedded = () => startService({ DATABASE_URL: "", DATA_DIR: join(folder, "data"), LOG_REQUESTS: "none" });
async function stop(service: Service) {
  service.child.kill("SIGTERM");
  expect(await service.child.exited).toBe(0);
}

describe("embedded mode's receipt key", () => {
  it("is made on the first start, kept in DATA_DIR, signs receipts jose verifies, and is the same after a restart", async () => {
    const first = await embedded();
    const jwksUrl = () => new URL(`http://127.0.0.1:${first.port}/.well-known/jwks.json`);
    let kid: string;
    try {
      expect((await first.api.createCoupon("EMBEDDED", 5)).status).toBe(201);
      const claimed = await first.api.claim("user-1", "EMBEDDED");
      const { payload, protectedHeader } = await jwtVerify(claimed.body.receipt, createRemoteJWKSet(jwksUrl()), {
        issuer: "coupon-service",
        algorithms: ["EdDSA"],
      });
      expect(payload).toMatchObject({ sub: "user-1", coupon: "EMBEDDED", seq: 1 });
      kid = protectedHeader.kid as string;
      expect(first.logs().find((line) => line.msg === "claim receipts signed")).toMatchObject({ kid });
    } finally {
      await stop(first);
    }
    const stored = JSON.parse(readFileSync(join(folder, "data", GENERATED_KEYS_FILE), "utf8"));
    expect(stored.keys.map((key: { kid: string }) => key.kid)).toEqual([kid]);
    const secret = stored.keys[0].d as string;
    expect(JSON.stringify(await first.finalLogs())).not.toContain(secret);

    const second = await embedded();
    try {
      const jwks = await second.api.get("/.well-known/jwks.json");
      expect(jwks.body.keys.map((key: { kid: string }) => key.kid)).toEqual([kid]);
      const claimed = await second.api.claim("user-2", "EMBEDDED");
      expect(claimed.body.seq).toBe(2);
      const url = new URL(`http://127.0.0.1:${second.port}/.well-known/jwks.json`);
      const { protectedHeader } = await jwtVerify(claimed.body.receipt, createRemoteJWKSet(url));
      expect(protectedHeader.kid).toBe(kid);
    } finally {
      await stop(second);
    }
  }, 60_000);
});

describe("a malformed receipt key set", () => {
  it("stops the start with the problem and the key's kid, before anything is touched, never showing its private part", async () => {
    const key = ed25519Jwk("2026-12");
    const other = ed25519Jwk("other");
    const env = { DATABASE_URL: "", DATA_DIR: join(folder, "refused"), RECEIPT_KEYS: keySet({ ...key, d: other.d }) };
    const { code, stdout, stderr } = await runToExit([], env);
    expect(code).toBe(1);
    expect(stdout).toContain(
      'RECEIPT_KEYS: key \\"2026-12\\": its private part (\\"d\\") does not belong to its public part (\\"x\\")',
    );
    expect(stdout + stderr).not.toContain(other.d);
    expect(stdout).not.toContain("listening");
    // Refused before the database is opened: DATA_DIR is never made.
    expect(existsSync(join(folder, "refused"))).toBe(false);
  }, 30_000);
});
