// The receipt key set: what is accepted, what stops the start and with which words (never a secret),
// and the key embedded mode makes and keeps.
import { describe, expect, it } from "bun:test";
import { mkdtemp, readFile, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  GENERATED_KEYS_FILE,
  generateReceiptKeys,
  loadReceiptKeys,
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
      expect(message).toStartWith("RECEIPT_KEYS: ");
      expect(message).toContain(expected);
      expect(message).not.toContain(key.d);
      expect(message).not.toContain(other.d);
    }
  });
});

describe("loadReceiptKeys", () => {
  it("has no keys, and no receipts, on PostgreSQL with none configured", async () => {
    expect(await loadReceiptKeys({ DATA_DIR: "./unused" }, false)).toBeUndefined();
  });

  it("reads RECEIPT_KEYS_FILE, and names the file when it cannot", async () => {
    const dir = await mkdtemp(join(tmpdir(), "receipt-keys-"));
    const file = join(dir, "keys.json");
    await writeFile(file, set(ed25519Jwk("from-file")));
    expect((await loadReceiptKeys({ RECEIPT_KEYS_FILE: file, DATA_DIR: dir }, false))?.signing.kid).toBe("from-file");
    await writeFile(file, "{}");
    await expect(loadReceiptKeys({ RECEIPT_KEYS_FILE: file, DATA_DIR: dir }, false)).rejects.toThrow(
      `RECEIPT_KEYS_FILE=${file}: key 1 has no "kid"`,
    );
    const missing = join(dir, "missing.json");
    await expect(loadReceiptKeys({ RECEIPT_KEYS_FILE: missing, DATA_DIR: dir }, true)).rejects.toThrow(
      `RECEIPT_KEYS_FILE=${missing}: cannot read the file (ENOENT)`,
    );
  });

  it("makes a key in DATA_DIR on embedded mode's first start, readable by its owner alone, and keeps it", async () => {
    const dir = join(await mkdtemp(join(tmpdir(), "receipt-keys-")), "data");
    const first = await loadReceiptKeys({ DATA_DIR: dir }, true);
    const path = join(dir, GENERATED_KEYS_FILE);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    const again = await loadReceiptKeys({ DATA_DIR: dir }, true);
    expect(again?.signing.kid).toBe(first?.signing.kid as string);
    expect(again?.published).toEqual(first?.published as never);
    expect(JSON.parse(await readFile(path, "utf8")).keys).toHaveLength(1);
  });

  it("prefers configured keys to the generated one, and keeps a memory:// database's key in memory", async () => {
    const configured = set(ed25519Jwk("configured"));
    expect((await loadReceiptKeys({ RECEIPT_KEYS: configured, DATA_DIR: "./unused" }, true))?.signing.kid).toBe(
      "configured",
    );
    const inMemory = await loadReceiptKeys({ DATA_DIR: "memory://" }, true);
    expect(inMemory?.published).toHaveLength(1);
  });
});

describe("generateReceiptKeys", () => {
  it("makes a set of one private Ed25519 key with a kid, that parses", () => {
    const keys = parseReceiptKeys(generateReceiptKeys(), undefined, "generated");
    expect(keys.published).toHaveLength(1);
    expect(keys.signing.kid).toMatch(/^[0-9a-f-]{36}$/);
  });
});
