// A compact JWT verified as jose's jwtVerify verifies it: the same checks in the same order, failing with
// jose's own errors, the key chosen by jose's key set; only the signature is checked by node:crypto, in
// its callback form on the runtime's thread pool, with a KeyObject kept per key, and an issuer's few
// headers are parsed once. Per RS256 token that costs the event loop about 8 µs where jwtVerify (through
// WebCrypto) costs 12, and the process 27 µs of CPU instead of 32 (docs/benchmarks.md has the claim
// path's figures). test/identity/jwt.test.ts holds the two to the same answers on valid, refused and
// mangled tokens.
import { constants, KeyObject, verify } from "node:crypto";
import { base64url, errors, type JWSHeaderParameters, type JWTPayload } from "jose";

/**
 * What a token must satisfy besides its signature; `clockTolerance` in seconds on exp and nbf, judged
 * by `wallClock` (milliseconds; Date.now by default): a token's times are the wall clock's.
 */
export interface JwtChecks {
  issuer: string;
  audience: string;
  algorithms: readonly string[];
  clockTolerance: number;
  wallClock?: () => number;
}

type Params = { hash: string | null; padding?: number; saltLength?: number; dsaEncoding?: "ieee-p1363" };
const rsa = (bits: number): Params => ({ hash: `sha${bits}` });
const pss = (bits: number): Params => ({
  hash: `sha${bits}`,
  padding: constants.RSA_PKCS1_PSS_PADDING,
  saltLength: bits / 8,
});
const ecdsa = (bits: number): Params => ({ hash: `sha${bits}`, dsaEncoding: "ieee-p1363" });
// How node:crypto verifies each algorithm (RFC 7518, section 3; RFC 8037 for EdDSA).
const PARAMS: Record<string, Params> = {
  RS256: rsa(256),
  RS384: rsa(384),
  RS512: rsa(512),
  PS256: pss(256),
  PS384: pss(384),
  PS512: pss(512),
  ES256: ecdsa(256),
  ES384: ecdsa(384),
  ES512: ecdsa(512),
  EdDSA: { hash: null },
  Ed25519: { hash: null },
};

const keyObjects = new WeakMap<CryptoKey, KeyObject>();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

// An issuer's tokens share a handful of headers: each is parsed and checked once. Bounded, since anyone
// may send headers; a valid one only is kept, frozen, as jose's key set reads it.
const HEADERS_MAX = 64;
const headers = new Map<string, { header: JWSHeaderParameters; b64: boolean }>();

/** jose's notion of a JSON object: a plain object, not an array or anything with a prototype of its own. */
function isObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== "object" || value === null || Object.prototype.toString.call(value) !== "[object Object]")
    return false;
  const prototype = Object.getPrototypeOf(value);
  return prototype === null || Object.getPrototypeOf(prototype) === null;
}

/** The bytes of a base64url member, or `Invalid` naming it. */
function decoded(part: string, label: string, Invalid: typeof errors.JWSInvalid): Uint8Array {
  try {
    return base64url.decode(part);
  } catch (cause) {
    throw new Invalid(`Failed to base64url decode the ${label}`, { cause });
  }
}

/** The JSON object a member holds, or `Invalid` with `message`. */
function jsonObject(bytes: () => Uint8Array, Invalid: typeof errors.JWSInvalid, message: string) {
  let value: unknown;
  try {
    value = JSON.parse(strictUtf8.decode(bytes()));
  } catch (cause) {
    throw new Invalid(message, { cause });
  }
  if (!isObject(value)) throw new Invalid(message);
  return value;
}

/** The unencoded-payload flag (RFC 7797) after the `crit` checks; any other extension is not supported. */
function b64Of(header: Record<string, unknown>): boolean {
  const { crit } = header;
  if (crit === undefined) return true;
  if (!Array.isArray(crit) || crit.length === 0 || crit.some((name) => typeof name !== "string" || name === ""))
    throw new errors.JWSInvalid(
      '"crit" (Critical) Header Parameter MUST be an array of non-empty strings when present',
    );
  for (const name of crit as string[]) {
    if (name !== "b64") throw new errors.JOSENotSupported(`Extension Header Parameter "${name}" is not recognized`);
    if (header.b64 === undefined) throw new errors.JWSInvalid('Extension Header Parameter "b64" is missing');
  }
  if (typeof header.b64 !== "boolean")
    throw new errors.JWSInvalid('The "b64" (base64url-encode payload) Header Parameter must be a boolean');
  return header.b64;
}

/**
 * Whether node:crypto finds `signature` valid for `data` under `key` and `alg`: its callback form,
 * which works on the runtime's thread pool, so the event loop only hands the work over.
 */
function signatureHolds(alg: string, key: CryptoKey, data: Buffer, signature: Uint8Array): Promise<boolean> {
  let object = keyObjects.get(key);
  if (!object) {
    object = KeyObject.from(key);
    keyObjects.set(key, object);
  }
  const { hash, ...options } = PARAMS[alg] as Params;
  const bits = object.asymmetricKeyDetails?.modulusLength;
  if (bits !== undefined && bits < 2048)
    throw new TypeError(`${alg} requires key modulusLength to be 2048 bits or larger`);
  const params = { key: object, ...options };
  return new Promise((resolve, reject) => {
    const fail = (cause: unknown) => reject(new errors.JWSSignatureVerificationFailed(undefined, { cause }));
    try {
      verify(hash, data, params, signature, (error, holds) => (error ? fail(error) : resolve(holds)));
    } catch (cause) {
      fail(cause);
    }
  });
}

const failed = (message: string, payload: JWTPayload, claim: string, reason: string) =>
  new errors.JWTClaimValidationFailed(message, payload, claim, reason);

/** The claims set of `payload` checked as jose checks it with required exp and sub. */
function checkedClaims(payload: Record<string, unknown>, checks: JwtChecks): JWTPayload {
  for (const claim of ["iss", "aud", "sub", "exp"])
    if (!Object.hasOwn(payload, claim)) throw failed(`missing required "${claim}" claim`, payload, claim, "missing");
  if (payload.iss !== checks.issuer) throw failed('unexpected "iss" claim value', payload, "iss", "check_failed");
  const { aud } = payload;
  if (aud !== checks.audience && !(Array.isArray(aud) && aud.includes(checks.audience)))
    throw failed('unexpected "aud" claim value', payload, "aud", "check_failed");
  const wallClock = checks.wallClock ?? (() => Date.now());
  const now = Math.floor(wallClock() / 1000);
  const numeric = (claim: string) => {
    if (payload[claim] !== undefined && typeof payload[claim] !== "number")
      throw failed(`"${claim}" claim must be a number`, payload, claim, "invalid");
    return payload[claim] as number | undefined;
  };
  numeric("iat");
  const nbf = numeric("nbf");
  if (nbf !== undefined && nbf > now + checks.clockTolerance)
    throw failed('"nbf" claim timestamp check failed', payload, "nbf", "check_failed");
  if ((numeric("exp") as number) <= now - checks.clockTolerance)
    throw new errors.JWTExpired('"exp" claim timestamp check failed', payload, "exp", "check_failed");
  return payload;
}

/** The claims of `token` once its signature by the key `keyFor` picks holds and `checks` pass; jose's errors otherwise. */
export async function verifyJwt(
  token: string,
  keyFor: (header: JWSHeaderParameters) => Promise<CryptoKey>,
  checks: JwtChecks,
): Promise<JWTPayload> {
  const parts = token.split(".");
  if (parts.length !== 3) throw new errors.JWSInvalid("Invalid Compact JWS");
  const [encodedHeader, encodedPayload, encodedSignature] = parts as [string, string, string];
  let parsed = headers.get(encodedHeader);
  if (!parsed) {
    const header = jsonObject(
      () => base64url.decode(encodedHeader),
      errors.JWSInvalid,
      "JWS Protected Header is invalid",
    );
    parsed = { header: Object.freeze(header) as JWSHeaderParameters, b64: b64Of(header) };
    if (headers.size >= HEADERS_MAX) headers.clear();
    headers.set(encodedHeader, parsed);
  }
  const { header, b64 } = parsed;
  const { alg } = header;
  if (typeof alg !== "string" || alg === "")
    throw new errors.JWSInvalid('JWS "alg" (Algorithm) Header Parameter missing or invalid');
  if (!checks.algorithms.includes(alg) || !(alg in PARAMS))
    throw new errors.JOSEAlgNotAllowed('"alg" (Algorithm) Header Parameter value not allowed');
  const key = await keyFor(header);
  const input = `${encodedHeader}.${encodedPayload}`;
  const data = Buffer.from(input);
  // The signing input is ASCII (as many UTF-8 bytes as characters), or jose refuses it.
  if (data.length !== input.length) throw new errors.JWSInvalid("The payload is not a valid base64url string");
  const signature = decoded(encodedSignature, "signature", errors.JWSInvalid);
  if (!(await signatureHolds(alg, key, data, signature))) throw new errors.JWSSignatureVerificationFailed();
  if (!b64) throw new errors.JWTInvalid("JWTs MUST NOT use unencoded payload");
  const payloadBytes = decoded(encodedPayload, "payload", errors.JWSInvalid);
  const payload = jsonObject(() => payloadBytes, errors.JWTInvalid, "JWT Claims Set must be a top-level JSON object");
  return checkedClaims(payload, checks);
}
