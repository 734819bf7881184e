// Receipt keys for tests: fresh Ed25519 keys as JWKs, and a key set as RECEIPT_KEYS takes it.
import { generateKeyPairSync } from "node:crypto";

export interface PrivateJwk {
  kty: string;
  crv: string;
  x: string;
  d: string;
  kid: string;
}

/** A fresh Ed25519 key as a private JWK named `kid`. */
export function ed25519Jwk(kid: string): PrivateJwk {
  const { privateKey } = generateKeyPairSync("ed25519");
  return { ...privateKey.export({ format: "jwk" }), kid } as PrivateJwk;
}

/** `keys` as a JWK Set, the form RECEIPT_KEYS and RECEIPT_KEYS_FILE take. */
export const keySet = (...keys: object[]) => JSON.stringify({ keys });
