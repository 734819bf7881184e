// A JWK Set as the service accepts it from a file or a URL: public signing keys only, each importable,
// RSA of 2048 bits at least; keys for something else (encryption) are ignored; one error lists every
// key that is wrong.
import { describe, expect, it } from "bun:test";
import { generateKeyPairSync } from "node:crypto";
import { exportJWK, generateKeyPair } from "jose";
import { readKeySet } from "../../src/identity/key-set";

const publicJwk = async (alg: string) => {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
  return { publicJwk: await exportJWK(publicKey), privateJwk: await exportJWK(privateKey) };
};

describe("readKeySet", () => {
  it("accepts RSA, EC and Ed25519 signing keys, with or without alg and use, and counts them", async () => {
    const rsa = (await publicJwk("RS256")).publicJwk;
    const ec = (await publicJwk("ES384")).publicJwk;
    const ed = (await publicJwk("EdDSA")).publicJwk;
    const set = await readKeySet({ keys: [{ ...rsa, kid: "a", alg: "PS256", use: "sig" }, { ...ec, kid: "b" }, ed] });
    expect(set.signingKeys).toBe(3);
    expect((await set.lookup({ alg: "ES384", kid: "b" })).type).toBe("public");
  });

  it("ignores keys for encryption or unknown algorithms, but refuses a set with no signing key at all", async () => {
    const rsa = (await publicJwk("RS256")).publicJwk;
    const keys = [
      { ...rsa, use: "enc" },
      { ...rsa, alg: "RSA-OAEP-256" },
    ];
    await expect(readKeySet({ keys })).rejects.toThrow(
      "no public signing key (RSA of 2048+ bits, EC P-256/384/521 or Ed25519) among 2",
    );
    expect((await readKeySet({ keys: [...keys, rsa] })).signingKeys).toBe(1);
  });

  it("refuses private and symmetric keys, and lists every bad key in one error", async () => {
    const { privateJwk } = await publicJwk("ES256");
    const attempt = readKeySet({
      keys: [{ ...privateJwk, kid: "leaked" }, { kty: "oct", k: "c2VjcmV0" }, "text", { kid: "nokty" }],
    });
    await expect(attempt).rejects.toThrow(
      'key 0 (kid "leaked") is a private key; only public keys may be published; ' +
        "key 1 is a symmetric key; only public keys may be published; " +
        "key 2 is not a JSON object; " +
        'key 3 (kid "nokty") has no "kty"',
    );
  });

  it("refuses an RSA key under 2048 bits and a key that does not import", async () => {
    // jose refuses to make one; node:crypto still does.
    const small = generateKeyPairSync("rsa", { modulusLength: 1024 }).publicKey.export({ format: "jwk" });
    await expect(readKeySet({ keys: [{ ...small, kid: "small" }] })).rejects.toThrow(
      'key 0 (kid "small") is an RSA key of 1024 bits (2048 at least)',
    );
    await expect(readKeySet({ keys: [{ kty: "EC", crv: "P-256", x: "AA", y: "AA", kid: "bad" }] })).rejects.toThrow(
      'key 0 (kid "bad") does not import as ES256',
    );
  });

  it.each([null, "keys", [], { keys: {} }, { jwks: [] }])("refuses %p as not a JWK Set", async (document) => {
    await expect(readKeySet(document)).rejects.toThrow('not a JWK Set: expected a JSON object {"keys": [...]}');
  });
});
