// An identity provider's JWK Set (RFC 7517) as read from its URL or a file: checked whole before it is
// used, so a broken document is refused with what is wrong with it (instead of turning every token it
// should verify into a 401), and handed to jose, whose local set picks a token's key and keeps each
// key imported once.
import { createLocalJWKSet, importJWK, type JSONWebKeySet, type JWK, type JWSHeaderParameters } from "jose";

/** The asymmetric signature algorithms a token may use: never HMAC (a public key is no secret), never none. */
export const TOKEN_ALGORITHMS = [
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "ES256",
  "ES384",
  "ES512",
  "EdDSA",
  "Ed25519",
] as const;

/** The key a token's header names; jose's JWKSNoMatchingKey when the set holds none (an unknown kid). */
export type KeyLookup = (header: JWSHeaderParameters) => Promise<CryptoKey>;

/** A checked key set: the lookup, and how many signing keys it holds (for the logs). */
export interface KeySet {
  lookup: KeyLookup;
  signingKeys: number;
}

// Members that only a private or a symmetric key carries (RFC 7518, section 6).
const SECRET_MEMBERS = ["d", "p", "q", "dp", "dq", "qi", "k"];

// The algorithm a key is imported with to check it, when the key names none itself.
const DEFAULT_ALGORITHM: Record<string, string> = {
  RSA: "RS256",
  "EC/P-256": "ES256",
  "EC/P-384": "ES384",
  "EC/P-521": "ES512",
  "OKP/Ed25519": "EdDSA",
};

/** The algorithm a signing key is checked with, or undefined for a key no token could use here. */
function algorithmOf(key: JWK): string | undefined {
  if (key.use !== undefined && key.use !== "sig") return undefined;
  const family = key.kty === "RSA" ? "RSA" : `${key.kty}/${key.crv}`;
  const algorithm = key.alg ?? DEFAULT_ALGORITHM[family];
  return (TOKEN_ALGORITHMS as readonly string[]).includes(algorithm ?? "") ? algorithm : undefined;
}

/** Why one key of the set is refused, or undefined when it is a usable public signing key (or ignored). */
async function keyProblem(key: unknown): Promise<string | undefined> {
  if (!key || typeof key !== "object" || Array.isArray(key)) return "is not a JSON object";
  const jwk = key as JWK;
  if (typeof jwk.kty !== "string") return 'has no "kty"';
  if (jwk.kty === "oct") return "is a symmetric key; only public keys may be published";
  if (SECRET_MEMBERS.some((member) => member in jwk)) return "is a private key; only public keys may be published";
  const algorithm = algorithmOf(jwk);
  if (!algorithm) return undefined;
  try {
    const imported = (await importJWK(jwk, algorithm)) as CryptoKey;
    const { modulusLength } = imported.algorithm as { modulusLength?: number };
    if (modulusLength !== undefined && modulusLength < 2048)
      return `is an RSA key of ${modulusLength} bits (2048 at least)`;
  } catch (error) {
    return `does not import as ${algorithm}: ${error instanceof Error ? error.message : String(error)}`;
  }
  return undefined;
}

/** The set in `document` (parsed JSON), checked; throws one Error listing what is wrong with it. */
export async function readKeySet(document: unknown): Promise<KeySet> {
  const keys = (document as { keys?: unknown } | null)?.keys;
  if (!document || typeof document !== "object" || !Array.isArray(keys)) {
    throw new Error('not a JWK Set: expected a JSON object {"keys": [...]}');
  }
  const problems: string[] = [];
  for (const [index, key] of keys.entries()) {
    const problem = await keyProblem(key);
    const kid = (key as { kid?: unknown })?.kid;
    if (problem)
      problems.push(`key ${index}${typeof kid === "string" ? ` (kid ${JSON.stringify(kid)})` : ""} ${problem}`);
  }
  const signingKeys = keys.filter((key) => algorithmOf(key as JWK)).length;
  if (problems.length === 0 && signingKeys === 0) {
    problems.push(`no public signing key (RSA of 2048+ bits, EC P-256/384/521 or Ed25519) among ${keys.length}`);
  }
  if (problems.length > 0) throw new Error(problems.join("; "));
  const local = createLocalJWKSet(document as JSONWebKeySet);
  // The key each (alg, kid) found, so a token does not search the set again; only keys found are kept.
  const found = new Map<string, Promise<CryptoKey>>();
  const lookup: KeyLookup = (header) => {
    const name = `${header.alg} ${header.kid ?? ""}`;
    let key = found.get(name);
    if (!key) {
      key = local(header);
      found.set(name, key);
      key.catch(() => found.delete(name));
    }
    return key;
  };
  return { lookup, signingKeys };
}
