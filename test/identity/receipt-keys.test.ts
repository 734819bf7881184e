// The receipt key set: what is accepted, what stops the start and with which words (never a secret),
// and the key embedded mode makes and keeps.
import { describe, expect, it } from "bun:test";
import { mkdtemp, readFile, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  configuredReceiptKeys,
  embeddedReceiptKeys,
  GENERATED_KEYS_FILE,
  generateReceiptKeys,
  parseReceiptKeys,
} from "../../src/identity/receipt-keys";
import { ed25519Jwk, keySet as set } from "../support/receipt-keys";

const refusal = (text: string, signing?: string) => {
  try {
    parseReceiptKeys(text, signing, "RECEIPT_KEYS");
  } catch (error) {
    return (error as Error).message;
  }
  throw new Error("accepted");
};

describe("parseReceiptKeys", () => {
  it("signs with the set's only private key and publishes every key without its private part", () => {
    const current = ed25519Jwk("2026-12");
    const { d: _, ...retired } = ed25519Jwk("2026-11");
    const keys = parseReceiptKeys(set(retired, current), undefined, "RECEIPT_KEYS");
    expect(keys.signing.kid).toBe("2026-12");
    expect(keys.published).toEqual([
      { kty: "OKP", crv: "Ed25519", x: retired.x, kid: "2026-11", alg: "EdDSA", use: "sig" },
      { kty: "OKP", crv: "Ed25519", x: current.x, kid: "2026-12", alg: "EdDSA", use: "sig" },
    ]);
    expect(JSON.stringify(keys.published)).not.toContain(current.d);
  });

  it("signs with the key RECEIPT_SIGNING_KEY names when the set holds several private keys", () => {
    const keys = parseReceiptKeys(set(ed25519Jwk("a"), ed25519Jwk("b")), "b", "RECEIPT_KEYS");
    expect(keys.signing.kid).toBe("b");
    expect(keys.published.map((key) => key.kid)).toEqual(["a", "b"]);
  });

  it("takes one JWK as a set of one", () => {
    expect(parseReceiptKeys(JSON.stringify(ed25519Jwk("one")), undefined, "RECEIPT_KEYS").signing.kid).toBe("one");
  });

  it("refuses a malformed set with the problem, never the private key", () => {
    const key = ed25519Jwk("k");
    const other = ed25519Jwk("other");
    const cases: [string, string | undefined, string][] = [
      ["{not json", undefined, "not JSON"],
      [set(), undefined, "the key set is empty"],
      [set({ ...key, kid: undefined }), undefined, 'key 1 has no "kid"'],
      [set({ ...key, crv: "P-256", kty: "EC" }), undefined, 'key "k" is not an Ed25519 key'],
      [set({ ...key, x: "short" }), undefined, 'key "k" has no valid "x"'],
      [set({ ...key, d: `${key.d.slice(0, 40)}!!!` }), undefined, 'key "k" has an invalid "d"'],
      [
        set({ ...key, d: other.d }),
        undefined,
        'key "k": its private part ("d") does not belong to its public part ("x")',
      ],
      [set(key, { ...other, kid: "k" }), undefined, 'two keys share the kid "k"'],
      [set(key, other), undefined, "2 private keys: name the one that signs with RECEIPT_SIGNING_KEY"],
      [set(key), "nope", 'RECEIPT_SIGNING_KEY names "nope", which is not in the set'],
      [set({ ...key, d: undefined }), undefined, 'no private key ("d") to sign with'],
      [set({ ...key, d: undefined }, other), "k", 'key "k" (RECEIPT_SIGNING_KEY) has no private part ("d")'],
    ];
    for (const [text, signing, expected] of cases) {
      const message = refusal(text, signing);
      expect(message).toStartWith("Invalid configuration:\n  - RECEIPT_KEYS: ");
      expect(message).toContain(expected);
      expect(message).not.toContain(key.d);
      expect(message).not.toContain(other.d);
    }
  });
});

describe("configuredReceiptKeys", () => {
  it("has no keys when neither RECEIPT_KEYS nor RECEIPT_KEYS_FILE is set", async () => {
    expect(await configuredReceiptKeys({})).toBeUndefined();
  });

  it("prefers RECEIPT_KEYS, with RECEIPT_SIGNING_KEY naming the signing key", async () => {
    const keys = await configuredReceiptKeys({
      RECEIPT_KEYS: set(ed25519Jwk("a"), ed25519Jwk("b")),
      RECEIPT_SIGNING_KEY: "a",
    });
    expect(keys?.signing.kid).toBe("a");
  });

  it("reads RECEIPT_KEYS_FILE, and names the file when it cannot", async () => {
    const dir = await mkdtemp(join(tmpdir(), "receipt-keys-"));
    const file = join(dir, "keys.json");
    await writeFile(file, set(ed25519Jwk("from-file")));
    expect((await configuredReceiptKeys({ RECEIPT_KEYS_FILE: file }))?.signing.kid).toBe("from-file");
    await writeFile(file, "{}");
    await expect(configuredReceiptKeys({ RECEIPT_KEYS_FILE: file })).rejects.toThrow(
      `RECEIPT_KEYS_FILE=${file}: key 1 has no "kid"`,
    );
    const missing = join(dir, "missing.json");
    await expect(configuredReceiptKeys({ RECEIPT_KEYS_FILE: missing })).rejects.toThrow(
      `RECEIPT_KEYS_FILE=${missing}: cannot read the file (ENOENT)`,
    );
  });
});

describe("embeddedReceiptKeys", () => {
  it("makes a key in DATA_DIR on the first start, readable by its owner alone, and keeps it", async () => {
    const dir = join(await mkdtemp(join(tmpdir(), "receipt-keys-")), "data");
    const first = await embeddedReceiptKeys(dir);
    const path = join(dir, GENERATED_KEYS_FILE);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    const again = await embeddedReceiptKeys(dir);
    expect(again.signing.kid).toBe(first.signing.kid);
    expect(again.published).toEqual(first.published);
    expect(JSON.parse(await readFile(path, "utf8")).keys).toHaveLength(1);
  });

  it("keeps a memory:// database's key in memory, a new one each time", async () => {
    const one = await embeddedReceiptKeys("memory://");
    const two = await embeddedReceiptKeys("memory://");
    expect(one.published).toHaveLength(1);
    expect(two.signing.kid).not.toBe(one.signing.kid);
  });
});

describe("generateReceiptKeys", () => {
  it("makes a set of one private Ed25519 key with a kid, that parses", () => {
    const keys = parseReceiptKeys(generateReceiptKeys(), undefined, "generated");
    expect(keys.published).toHaveLength(1);
    expect(keys.signing.kid).toMatch(/^[0-9a-f-]{36}$/);
  });
});
