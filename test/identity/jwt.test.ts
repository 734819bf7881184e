// verifyJwt gives jose's jwtVerify's answers: on valid tokens of every accepted algorithm, on each claim
// and header jose checks (signed by the right key, so only that check can refuse them), on broken
// structure and on randomly mangled tokens, the same claims or the same refusal.
import { describe, expect, it } from "bun:test";
import { constants, KeyObject, sign } from "node:crypto";
import { createLocalJWKSet, exportJWK, generateKeyPair, type JWSHeaderParameters, jwtVerify } from "jose";
import { verifyJwt } from "../../src/identity/jwt";
import { TOKEN_ALGORITHMS } from "../../src/identity/key-set";
import { CLOCK_TOLERANCE_S, refusalDetail } from "../../src/identity/tokens";

const ISSUER = "https://id.example/";
const AUDIENCE = "coupon-service";
const checks = { issuer: ISSUER, audience: AUDIENCE, algorithms: TOKEN_ALGORITHMS, clockTolerance: CLOCK_TOLERANCE_S };
const b64 = (value: unknown) =>
  Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");
const now = () => Math.floor(Date.now() / 1000);

interface Signer {
  alg: string;
  kid: string;
  /** A compact JWS of `header` (alg and kid added unless given) and `payload`, signed by node:crypto. */
  token(payload: unknown, header?: Record<string, unknown>): string;
  keys: ReturnType<typeof createLocalJWKSet>;
}

async function signer(alg: string): Promise<Signer> {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
  const kid = `${alg}-key`;
  const keys = createLocalJWKSet({ keys: [{ ...(await exportJWK(publicKey)), kid }] });
  const key = KeyObject.from(privateKey);
  const bits = Number(alg.slice(2)) || 0;
  const options = alg.startsWith("PS")
    ? { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: bits / 8 }
    : alg.startsWith("ES")
      ? { key, dsaEncoding: "ieee-p1363" as const }
      : { key };
  return {
    alg,
    kid,
    keys,
    token(payload, header = {}) {
      const input = `${b64({ alg, kid, ...header })}.${b64(payload)}`;
      const signature = sign(alg.startsWith("Ed") ? null : `sha${bits}`, Buffer.from(input), options);
      return `${input}.${signature.toString("base64url")}`;
    },
  };
}

/** What a verification ends as: the claims, or the 401's detail (the error's name when it is not one). */
async function outcome(run: () => Promise<unknown>) {
  try {
    return { claims: await run() };
  } catch (error) {
    return { refused: refusalDetail(error) ?? (error as Error).name };
  }
}

async function bothSay(token: string, keys: Signer["keys"]) {
  const lookup = (header: JWSHeaderParameters) => keys(header);
  const options = { ...checks, algorithms: [...TOKEN_ALGORITHMS], requiredClaims: ["exp", "sub"] };
  const jose = await outcome(async () => (await jwtVerify(token, keys, options)).payload);
  const ours = await outcome(() => verifyJwt(token, lookup, checks));
  return { jose, ours };
}

const valid = () => ({ iss: ISSUER, aud: AUDIENCE, sub: "user-42", iat: now(), exp: now() + 600 });
const late = CLOCK_TOLERANCE_S + 60;
const within = CLOCK_TOLERANCE_S - 10;
const { iss: _i, ...noIss } = valid();
const { aud: _a, ...noAud } = valid();
const { sub: _s, ...noSub } = valid();
const { exp: _e, ...noExp } = valid();

// Signed by the right key: only the claim or header named can refuse them.
const cases: [string, unknown, Record<string, unknown>?][] = [
  ["a valid token", valid()],
  ["aud as an array that lists it", { ...valid(), aud: ["other", AUDIENCE] }],
  ["aud as an array without it", { ...valid(), aud: ["other"] }],
  ["aud as a number", { ...valid(), aud: 7 }],
  ["another iss", { ...valid(), iss: "https://other.example/" }],
  ["no iss", noIss],
  ["no aud", noAud],
  ["no sub", noSub],
  ["no exp", noExp],
  ["exp past the tolerance", { ...valid(), exp: now() - late }],
  ["exp within the tolerance", { ...valid(), exp: now() - within }],
  ["exp as a string", { ...valid(), exp: "tomorrow" }],
  ["nbf past the tolerance", { ...valid(), nbf: now() + late }],
  ["nbf within the tolerance", { ...valid(), nbf: now() + within }],
  ["nbf as a string, exp as a string", { ...valid(), nbf: "soon", exp: "later" }],
  ["nbf ahead, exp as a string", { ...valid(), nbf: now() + late, exp: "later" }],
  ["iat as a string", { ...valid(), iat: "now" }],
  ["a payload that is an array", [valid()]],
  ["a payload that is not JSON", "not json"],
  ["crit naming an unknown extension", valid(), { crit: ["exp"], exp: 1 }],
  ["an empty crit", valid(), { crit: [] }],
  ["crit b64 false", valid(), { crit: ["b64"], b64: false }],
  ["crit b64 not a boolean", valid(), { crit: ["b64"], b64: "no" }],
  ["crit b64 without b64", valid(), { crit: ["b64"] }],
  ["crit with a duplicate", valid(), { crit: ["b64", "b64"], b64: true }],
  ["b64 false without crit (ignored)", valid(), { b64: false }],
  ["an unknown kid", valid(), { kid: "rotated-away" }],
  ["no kid (the one key of its type)", valid(), { kid: undefined }],
  ["alg none", valid(), { alg: "none" }],
  ["alg HS256", valid(), { alg: "HS256" }],
  ["an empty alg", valid(), { alg: "" }],
  ["alg as a number", valid(), { alg: 256 }],
];

describe("verifyJwt against jose's jwtVerify", () => {
  for (const alg of ["RS256", "PS384", "ES256", "ES512", "EdDSA"]) {
    it(`agrees with it on ${cases.length} tokens signed with ${alg}`, async () => {
      const key = await signer(alg);
      const accepted = await bothSay(key.token(valid()), key.keys);
      expect(accepted.jose).toEqual({ claims: expect.objectContaining({ sub: "user-42" }) });
      for (const [label, payload, header] of cases) {
        const { jose, ours } = await bothSay(key.token(payload, header), key.keys);
        expect(ours, `${alg}: ${label}`).toEqual(jose);
      }
    });
  }

  it("agrees with it on broken structure: parts, base64url, header", async () => {
    const key = await signer("RS256");
    const token = key.token(valid());
    const [header, payload, signature] = token.split(".") as [string, string, string];
    const broken = [
      "",
      "a.b",
      `${token}.extra`,
      `${header}.${payload}`,
      `${header}.${payload}.`,
      `${header}.${payload}.${signature}=`,
      `${header}.${payload}.${signature.slice(0, -4)}`,
      `${header}.${payload}.${signature.replace(/^./, "*")}`,
      `${header}.${payload.replace(/.$/, "é")}.${signature}`,
      `${b64([1])}.${payload}.${signature}`,
      `${b64("{")}.${payload}.${signature}`,
      `%%%.${payload}.${signature}`,
      `${header}.${b64({ ...valid(), sub: "admin" })}.${signature}`,
      `${header}.${Buffer.from([0xff, 0xfe]).toString("base64url")}.${signature}`,
    ];
    for (const text of broken) {
      const { jose, ours } = await bothSay(text, key.keys);
      expect(ours, text).toEqual(jose);
      expect(jose.refused, text).toBeDefined();
    }
  });

  it("agrees with it on 300 randomly mangled tokens", async () => {
    const keys = await Promise.all(["RS256", "ES256", "EdDSA"].map(signer));
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=";
    let refused = 0;
    for (let i = 0; i < 300; i++) {
      const key = keys[i % keys.length] as Signer;
      const token = key.token(valid());
      const at = Math.floor(Math.random() * token.length);
      const char = alphabet[Math.floor(Math.random() * alphabet.length)];
      const mangled = [
        `${token.slice(0, at)}${char}${token.slice(at + 1)}`,
        `${token.slice(0, at)}${token.slice(at + 1)}`,
        `${token.slice(0, at)}${char}${token.slice(at)}`,
      ][i % 3] as string;
      const { jose, ours } = await bothSay(mangled, key.keys);
      expect(ours, mangled).toEqual(jose);
      if (jose.refused) refused++;
    }
    expect(refused).toBeGreaterThan(250);
  });
});
