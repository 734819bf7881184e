// Signed receipts: a compact JWS (EdDSA over Ed25519) a checkout verifies offline against the
// published keys, saying "`sub` won `coupon`, the `seq`-th winner, at `iat`". Built by hand over
// node:crypto rather than a JOSE library: a receipt is on the hot path (one signature per 201), and
// its bytes depend on nothing but the claim and the key (Ed25519 is deterministic), so an
// Idempotency-Key replay re-signs the same claim into the same receipt, byte for byte.
import { createHash, sign } from "node:crypto";
import type { PublicJwk, ReceiptKeys } from "./receipt-keys";

/** The claim a receipt is about. */
export interface ReceiptClaim {
  coupon: string;
  user: string;
  seq: number;
  claimedAt: Date;
}

/** Signs receipts; `jwks` is what GET /.well-known/jwks.json publishes. */
export interface ReceiptSigner {
  sign(claim: ReceiptClaim): Promise<string>;
  readonly jwks: { keys: PublicJwk[] };
}

export interface ReceiptOptions {
  /** RECEIPT_ISSUER: the receipt's `iss`. */
  issuer: string;
  /** RECEIPT_TTL in milliseconds: the receipt's `exp` is `iat` plus it; unset, no `exp`. */
  ttlMs?: number;
}

const base64url = (text: string) => Buffer.from(text).toString("base64url");

/** The receipt's id: the same for the same claim (so a replay's receipt is the same), unique per claim. */
export function receiptId(issuer: string, coupon: string, seq: number): string {
  return createHash("sha256").update(`${issuer}\n${coupon}\n${seq}`).digest("base64url").slice(0, 22);
}

/** A signer with `keys`' signing key, publishing all of them. */
export function createReceiptSigner(keys: ReceiptKeys, { issuer, ttlMs }: ReceiptOptions): ReceiptSigner {
  const header = base64url(JSON.stringify({ alg: "EdDSA", typ: "JWT", kid: keys.signing.kid }));
  const ttlSeconds = ttlMs === undefined ? undefined : Math.ceil(ttlMs / 1000);
  return {
    jwks: { keys: keys.published },
    sign({ coupon, user, seq, claimedAt }) {
      // JWT NumericDate: whole seconds; the 201's claimed_at keeps the milliseconds.
      const iat = Math.floor(claimedAt.getTime() / 1000);
      const claims = {
        iss: issuer,
        sub: user,
        coupon,
        seq,
        iat,
        ...(ttlSeconds === undefined ? {} : { exp: iat + ttlSeconds }),
        jti: receiptId(issuer, coupon, seq),
      };
      const input = `${header}.${base64url(JSON.stringify(claims))}`;
      // The callback form signs on the runtime's thread pool: the event loop only hands the work over
      // (about 1 µs instead of 20 µs here), which in embedded mode is also PGlite's thread.
      return new Promise((resolve, reject) =>
        sign(null, Buffer.from(input), keys.signing.key, (error, signature) =>
          error ? reject(error) : resolve(`${input}.${signature.toString("base64url")}`),
        ),
      );
    },
  };
}
