// An identity provider in the test's own process: its JWK Set served over HTTP by a Bun.serve (every
// request counted; it can be made to fail or be slow), key rotation, tokens minted with jose, and the
// forged tokens an attacker would try (alg none, HS256 signed with the public key, a foreign key).
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type CryptoKey,
  exportJWK,
  exportSPKI,
  generateKeyPair,
  type JWK,
  type JWTPayload,
  SignJWT,
  UnsecuredJWT,
} from "jose";
import { type FetchPolicy, remoteKeys } from "../../src/identity/issuer-keys";
import { createTokenVerifier, type TokenVerifier } from "../../src/identity/tokens";
import { createLogger, type Logger } from "../../src/log";

export const ISSUER = "https://id.coupon-service.test/";
export const AUDIENCE = "coupon-service";

interface SigningKey {
  kid: string;
  alg: string;
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  jwk: JWK;
}

/** How a token is minted: its claims beside sub, and what to get wrong on purpose. */
export interface MintOptions {
  /** Seconds from now; negative for a token that has expired. Default 1 hour. */
  expiresIn?: number;
  /** Seconds from now for `nbf`. */
  notBefore?: number;
  issuer?: string;
  audience?: string;
  /** The kid in the header, whatever key signs. */
  kid?: string;
  /** Extra claims (scope, scp, roles...). */
  claims?: JWTPayload;
}

export interface TestIssuer {
  /** The JWK Set's URL. */
  jwksUrl: string;
  /** JWK Set requests answered (or refused) so far. */
  readonly fetches: number;
  /** While true, the JWK Set answers 503. */
  down: boolean;
  /** Milliseconds each JWK Set answer waits first. */
  delayMs: number;
  /** A token for `sub` (none at all for null), signed by the current key. */
  mint(sub: string | null, options?: MintOptions): Promise<string>;
  /** A new current key with a new kid; the old key stays published unless `dropOld`. */
  rotate(options?: { dropOld?: boolean }): Promise<void>;
  /** The published JWK Set. */
  jwks(): { keys: JWK[] };
  /** The JWK Set written to a file of its own (deleted by stop()). */
  jwksFile(): string;
  /** AUTH_* settings naming this issuer (its URL for keys). */
  settings(extra?: Record<string, string>): Record<string, string>;
  /** A verifier of this issuer's tokens over its URL, with `policy` (short test timings by default). */
  verifier(options?: { adminScope?: string; policy?: Partial<FetchPolicy>; log?: Logger }): TokenVerifier;
  forged: {
    /** `alg: none`, no signature. */
    none(sub: string): string;
    /** HS256 with the current public key (its SPKI PEM) as the HMAC secret: algorithm confusion. */
    hmacWithPublicKey(sub: string): Promise<string>;
    /** Signed by a key the issuer never published, under the current kid. */
    foreignKey(sub: string): Promise<string>;
    /** Signed by a key the issuer never published, under a kid it never published. */
    unknownKid(sub: string, kid?: string): Promise<string>;
  };
  stop(): Promise<void>;
}

let kids = 0;

async function signingKey(alg: string): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const kid = `key-${++kids}`;
  const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: "sig" };
  return { kid, alg, privateKey, publicKey, jwk };
}

/** Starts an issuer signing with `alg` (RS256 by default: what most identity providers use). */
export async function startIssuer(options: { alg?: string } = {}): Promise<TestIssuer> {
  const alg = options.alg ?? "RS256";
  let current = await signingKey(alg);
  let published: SigningKey[] = [current];
  let fetches = 0;
  const folder = mkdtempSync(join(tmpdir(), "coupon-issuer-"));
  const state = { down: false, delayMs: 0 };
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(request) {
      if (new URL(request.url).pathname !== "/jwks.json") return new Response("not found", { status: 404 });
      fetches++;
      if (state.delayMs > 0) await Bun.sleep(state.delayMs);
      if (state.down) return new Response("unavailable", { status: 503 });
      return Response.json({ keys: published.map((key) => key.jwk) });
    },
  });
  const jwksUrl = `http://127.0.0.1:${server.port}/jwks.json`;
  const sign = (sub: string | null, key: CryptoKey, header: { alg: string; kid?: string }, mint: MintOptions = {}) => {
    const now = Math.floor(Date.now() / 1000);
    const jwt = new SignJWT({ ...mint.claims })
      .setProtectedHeader({ typ: "JWT", ...header })
      .setIssuer(mint.issuer ?? ISSUER)
      .setAudience(mint.audience ?? AUDIENCE)
      .setIssuedAt(now)
      .setExpirationTime(now + (mint.expiresIn ?? 3600));
    if (sub !== null) jwt.setSubject(sub);
    if (mint.notBefore !== undefined) jwt.setNotBefore(now + mint.notBefore);
    return jwt.sign(key);
  };
  const stranger = await signingKey(alg);
  const issuer: TestIssuer = {
    jwksUrl,
    get fetches() {
      return fetches;
    },
    get down() {
      return state.down;
    },
    set down(value) {
      state.down = value;
    },
    get delayMs() {
      return state.delayMs;
    },
    set delayMs(value) {
      state.delayMs = value;
    },
    mint: (sub, mint) => sign(sub, current.privateKey, { alg, kid: mint?.kid ?? current.kid }, mint),
    async rotate(rotation = {}) {
      current = await signingKey(alg);
      published = rotation.dropOld ? [current] : [...published, current];
    },
    jwks: () => ({ keys: published.map((key) => key.jwk) }),
    jwksFile() {
      const file = join(folder, `jwks-${++kids}.json`);
      writeFileSync(file, JSON.stringify(issuer.jwks()));
      return file;
    },
    settings: (extra = {}) => ({ AUTH_ISSUER: ISSUER, AUTH_AUDIENCE: AUDIENCE, AUTH_JWKS_URL: jwksUrl, ...extra }),
    verifier({ adminScope, policy, log } = {}) {
      const timings = { maxAgeMs: 600_000, cooldownMs: 30_000, retryMs: 1000, timeoutMs: 2000, ...policy };
      const keys = remoteKeys(new URL(jwksUrl), log ?? createLogger("silent"), timings);
      return createTokenVerifier({ issuer: ISSUER, audience: AUDIENCE, keys, adminScope });
    },
    forged: {
      none: (sub) =>
        new UnsecuredJWT({}).setSubject(sub).setIssuer(ISSUER).setAudience(AUDIENCE).setExpirationTime("1h").encode(),
      async hmacWithPublicKey(sub) {
        const secret = new TextEncoder().encode(await exportSPKI(current.publicKey));
        return sign(sub, secret as unknown as CryptoKey, { alg: "HS256", kid: current.kid });
      },
      foreignKey: (sub) => sign(sub, stranger.privateKey, { alg, kid: current.kid }),
      unknownKid: (sub, kid = "never-published") => sign(sub, stranger.privateKey, { alg, kid }),
    },
    async stop() {
      await server.stop(true);
      rmSync(folder, { recursive: true, force: true });
    },
  };
  return issuer;
}
