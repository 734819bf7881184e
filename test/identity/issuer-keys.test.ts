// The identity provider's keys as tokens need them: fetched once and kept, fetched again when the
// provider rotates (a token with a new kid), never more than once per cooldown however many tokens
// name unknown kids, a 503 (never a 401 or a 500) while they cannot be had, within the request's
// deadline; and a JWKS file read and checked at start.
import { afterEach, beforeEach, describe, expect, it } from "bun:test";
import { writeFileSync } from "node:fs";
import { AppError } from "../../src/domain/errors";
import { fileKeys, keysFailures, remoteKeys } from "../../src/identity/issuer-keys";
import { createTokenVerifier, type TokenVerifier } from "../../src/identity/tokens";
import { createLogger } from "../../src/log";
import { AUDIENCE, ISSUER, startIssuer, type TestIssuer } from "../support/issuer";

let issuer: TestIssuer;
beforeEach(async () => {
  issuer = await startIssuer();
});
afterEach(() => issuer.stop());

const soon = () => performance.now() + 5000;

/** What `verify` ends as: the subject, or the refusal's code and detail. */
async function outcome(verifier: TokenVerifier, token: string, deadline = soon()): Promise<string | object> {
  try {
    return (await verifier.verify(token, deadline)).subject;
  } catch (error) {
    if (!(error instanceof AppError)) throw error;
    const { code, message: detail, retryAfter } = error;
    return retryAfter === undefined ? { code, detail } : { code, detail, retryAfter };
  }
}

const unknownKey = {
  code: "UNAUTHORIZED",
  detail: "The bearer token's key is not one of the identity provider's keys.",
};

describe("keys from the JWKS URL", () => {
  it("fetches the set once for many tokens, and not before the first", async () => {
    const verifier = issuer.verifier();
    expect(issuer.fetches).toBe(0);
    const tokens = await Promise.all(Array.from({ length: 50 }, (_, i) => issuer.mint(`user-${i}`)));
    const subjects = await Promise.all(tokens.map((token) => outcome(verifier, token)));
    expect(subjects).toEqual(tokens.map((_, i) => `user-${i}`));
    expect(issuer.fetches).toBe(1);
  });

  it("fetches again for a token with a new kid once the provider rotates, and keeps accepting the old key", async () => {
    const verifier = issuer.verifier({ policy: { cooldownMs: 0 } });
    const before = await issuer.mint("user-1");
    expect(await outcome(verifier, before)).toBe("user-1");
    await issuer.rotate();
    expect(await outcome(verifier, await issuer.mint("user-2"))).toBe("user-2");
    expect(issuer.fetches).toBe(2);
    expect(await outcome(verifier, before)).toBe("user-1");
    expect(issuer.fetches).toBe(2);
  });

  it("stops accepting a key the provider dropped once the set is fetched again", async () => {
    const verifier = issuer.verifier({ policy: { cooldownMs: 0 } });
    const old = await issuer.mint("user-1");
    expect(await outcome(verifier, old)).toBe("user-1");
    await issuer.rotate({ dropOld: true });
    expect(await outcome(verifier, await issuer.mint("user-2"))).toBe("user-2");
    expect(await outcome(verifier, old)).toEqual(unknownKey);
  });

  it("fetches the set on warm(), before any token, and warm() resolves even when the provider is down", async () => {
    const verifier = issuer.verifier();
    await verifier.keys.warm();
    expect(issuer.fetches).toBe(1);
    expect(await outcome(verifier, await issuer.mint("user-1"))).toBe("user-1");
    expect(issuer.fetches).toBe(1);
    issuer.down = true;
    await issuer.verifier().keys.warm();
    expect(issuer.fetches).toBe(2);
  });

  it("fetches at most once per cooldown under a flood of tokens with unknown kids, all refused with 401", async () => {
    const verifier = issuer.verifier({ policy: { cooldownMs: 60_000 } });
    expect(await outcome(verifier, await issuer.mint("user-1"))).toBe("user-1");
    const forged = await Promise.all(Array.from({ length: 20 }, (_, i) => issuer.forged.unknownKid("x", `kid-${i}`)));
    const flood = await Promise.all(
      Array.from({ length: 2000 }, (_, i) => outcome(verifier, forged[i % 20] as string)),
    );
    expect(new Set(flood.map((answer) => JSON.stringify(answer)))).toEqual(new Set([JSON.stringify(unknownKey)]));
    // The first fetch, and none since: the last one started less than a cooldown ago.
    expect(issuer.fetches).toBe(1);
    expect(verifier.keys.fetches).toBe(1);
  });

  it("fetches once for the whole flood when the cooldown has passed, all unknown kids waiting for that one fetch", async () => {
    const verifier = issuer.verifier({ policy: { cooldownMs: 50 } });
    expect(await outcome(verifier, await issuer.mint("user-1"))).toBe("user-1");
    await Bun.sleep(60);
    const forged = await issuer.forged.unknownKid("x");
    const flood = await Promise.all(Array.from({ length: 1000 }, () => outcome(verifier, forged)));
    expect(new Set(flood.map((answer) => JSON.stringify(answer))).size).toBe(1);
    expect(issuer.fetches).toBe(2);
  });

  it("answers 503 with Retry-After, not 401, while the provider's keys cannot be fetched, and recovers", async () => {
    issuer.down = true;
    const verifier = issuer.verifier({ policy: { retryMs: 50 } });
    const token = await issuer.mint("user-1");
    const unavailable = { ...keysFailures.unavailable, retryAfter: 1 };
    expect(await outcome(verifier, token)).toEqual(unavailable);
    // Within retryMs of the failure: answered at once, the provider left alone.
    expect(await outcome(verifier, token)).toEqual(unavailable);
    expect(issuer.fetches).toBe(1);
    issuer.down = false;
    await Bun.sleep(60);
    expect(await outcome(verifier, token)).toBe("user-1");
    expect(issuer.fetches).toBe(2);
  });

  it("answers 503 when the provider is unreachable (nothing listening)", async () => {
    const verifier = issuer.verifier();
    await issuer.stop();
    expect(await outcome(verifier, await issuer.mint("user-1"))).toEqual({
      ...keysFailures.unavailable,
      retryAfter: 1,
    });
    issuer = await startIssuer(); // for afterEach
  });

  it("answers 503 at the request's deadline when the fetch is slower, and the fetch serves later tokens", async () => {
    issuer.delayMs = 300;
    const verifier = issuer.verifier();
    const token = await issuer.mint("user-1");
    const started = performance.now();
    expect(await outcome(verifier, token, performance.now() + 50)).toEqual({ ...keysFailures.late, retryAfter: 1 });
    expect(performance.now() - started).toBeLessThan(250);
    expect(await outcome(verifier, token)).toBe("user-1");
    expect(issuer.fetches).toBe(1);
  });

  it("keeps verifying with the keys it holds when a refresh of an old set fails, and refreshes in the background", async () => {
    const verifier = issuer.verifier({ policy: { maxAgeMs: 0, cooldownMs: 0 } });
    expect(await outcome(verifier, await issuer.mint("user-1"))).toBe("user-1");
    issuer.down = true;
    expect(await outcome(verifier, await issuer.mint("user-2"))).toBe("user-2");
    await Bun.sleep(20);
    expect(issuer.fetches).toBe(2);
  });

  it("refuses a set whose document is not a JWK Set as unavailable, saying why in the log", async () => {
    const lines: string[] = [];
    const keys = remoteKeys(
      new URL(issuer.jwksUrl.replace("/jwks.json", "/nothing")),
      createLogger("warn", (line) => lines.push(line)),
    );
    const verifier = createTokenVerifier({ issuer: ISSUER, audience: AUDIENCE, keys });
    expect(await outcome(verifier, await issuer.mint("user-1"))).toEqual({
      ...keysFailures.unavailable,
      retryAfter: 1,
    });
    expect(lines.map((line) => JSON.parse(line))).toMatchObject([
      { level: "warn", msg: "identity provider keys unavailable", cause: "Error: answered 404, expected 200" },
    ]);
  });
});

describe("keys from a JWKS file", () => {
  it("verifies with the keys in the file, which it never fetches", async () => {
    const keys = await fileKeys(issuer.jwksFile());
    const verifier = createTokenVerifier({ issuer: ISSUER, audience: AUDIENCE, keys });
    expect(await outcome(verifier, await issuer.mint("user-1"))).toBe("user-1");
    expect(await outcome(verifier, await issuer.forged.unknownKid("user-1"))).toEqual(unknownKey);
    expect(keys.fetches).toBe(0);
    expect(issuer.fetches).toBe(0);
  });

  it.each([
    ["not JSON", "{", /^Invalid configuration:\n {2}- AUTH_JWKS_FILE=".*": JSON Parse error/],
    ["not a set", "[]", 'not a JWK Set: expected a JSON object {"keys": [...]}'],
    ["an empty set", '{"keys":[]}', "no public signing key (RSA of 2048+ bits, EC P-256/384/521 or Ed25519) among 0"],
  ])("stops the start on a file that is %s, naming the setting and the file", async (_, text, expected) => {
    const file = issuer.jwksFile();
    writeFileSync(file, text);
    const attempt = fileKeys(file);
    await expect(attempt).rejects.toThrow(expected);
    await expect(attempt).rejects.toThrow(`AUTH_JWKS_FILE=${JSON.stringify(file)}`);
  });

  it("stops the start on a file that does not exist", async () => {
    await expect(fileKeys("/nonexistent/jwks.json")).rejects.toThrow('AUTH_JWKS_FILE="/nonexistent/jwks.json": ENOENT');
  });
});
