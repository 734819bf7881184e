// Proof of a claim over HTTP against PostgreSQL: seq and the signed receipt in the claim's 201 (and
// its replay, byte for byte), the published keys and their caching, receipts verified with jose (an
// implementation independent of the signer) across replicas signing with different keys of one set
// (a rotation), and GET /api/coupons/{name}/claims/{user_id}.
import { describe, expect, it } from "bun:test";
import { createLocalJWKSet, decodeProtectedHeader, type JSONWebKeySet, jwtVerify } from "jose";
import { parseReceiptKeys } from "../../src/identity/receipt-keys";
import { createReceiptSigner } from "../../src/identity/receipts";
import { buildApp } from "../support/app";
import { databaseForSuite } from "../support/database";
import { type ApiResponse, type Client, client } from "../support/http";
import { ed25519Jwk, keySet } from "../support/receipt-keys";

const database = databaseForSuite();

// One key set, two private keys: replica A signs with "old", replica B with "new" (mid-rotation).
const old = ed25519Jwk("old");
const fresh = ed25519Jwk("new");
const signer = (kid: string) =>
  createReceiptSigner(parseReceiptKeys(keySet(old, fresh), kid, "test"), { issuer: "https://coupons.test" });
const replica = (kid?: string) => client(buildApp(database.handle.db, kid ? { receipts: signer(kid) } : {}).app);

const claim = (on: Client, user: string, coupon: string, headers: Record<string, string> = {}) =>
  on.post("/api/coupons/claim", { user_id: user, coupon_name: coupon }, headers);
const held = (on: Client, coupon: string, user: string) =>
  on.get(`/api/coupons/${encodeURIComponent(coupon)}/claims/${encodeURIComponent(user)}`);
const release = (on: Client, coupon: string, user: string) =>
  on.call("DELETE", `/api/coupons/${encodeURIComponent(coupon)}/claims/${encodeURIComponent(user)}`);

/** The receipt of a 201, verified against the key set `on` publishes. */
async function verified(on: Client, res: ApiResponse) {
  const jwks = (await on.get("/.well-known/jwks.json")).body as JSONWebKeySet;
  return jwtVerify(res.body.receipt, createLocalJWKSet(jwks), {
    issuer: "https://coupons.test",
    algorithms: ["EdDSA"],
  });
}

describe("the claim's 201", () => {
  it("answers a spec-shaped claim with the spec's fields as before, then seq, and no receipt without keys", async () => {
    const plain = replica();
    await plain.createCoupon("PLAIN", 5);
    const res = await claim(plain, "user-1", "PLAIN");
    expect(res.status).toBe(201);
    expect(Object.keys(res.body)).toEqual(["user_id", "coupon_name", "claimed_at", "seq"]);
    expect(res.body).toMatchObject({ user_id: "user-1", coupon_name: "PLAIN", seq: 1 });
    expect(res.body.claimed_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    const jwks = await plain.get("/.well-known/jwks.json");
    expect(jwks.body).toEqual({ keys: [] });
  });

  it("carries a receipt that says who won which coupon, as which winner, when", async () => {
    const a = replica("old");
    await a.createCoupon("SIGNED", 5);
    await claim(a, "user-1", "SIGNED");
    const res = await claim(a, "user-2", "SIGNED");
    expect(res.status).toBe(201);
    expect(Object.keys(res.body)).toEqual(["user_id", "coupon_name", "claimed_at", "seq", "receipt"]);
    expect(decodeProtectedHeader(res.body.receipt)).toEqual({ alg: "EdDSA", typ: "JWT", kid: "old" });
    const { payload } = await verified(a, res);
    expect(payload).toMatchObject({
      iss: "https://coupons.test",
      sub: "user-2",
      coupon: "SIGNED",
      seq: 2,
      iat: Math.floor(Date.parse(res.body.claimed_at) / 1000),
    });
    expect(payload.jti).toMatch(/^[A-Za-z0-9_-]{22}$/);
  });

  it("gives the same receipt again, byte for byte, to an Idempotency-Key replay from another replica", async () => {
    const a = replica("old");
    const b = replica("old");
    await a.createCoupon("REPLAYED", 5);
    const key = { "idempotency-key": crypto.randomUUID() };
    const first = await claim(a, "user-1", "REPLAYED", key);
    const again = await claim(b, "user-1", "REPLAYED", key);
    expect(again.headers.get("idempotent-replayed")).toBe("true");
    expect(JSON.stringify(again.body)).toBe(JSON.stringify(first.body));
    expect(again.body.receipt).toBeString();
  });
});

describe("receipts across a key rotation", () => {
  it("verify against either replica's published keys, whichever key signed them", async () => {
    const a = replica("old");
    const b = replica("new");
    await a.createCoupon("ROTATED", 5);
    const fromA = await claim(a, "user-a", "ROTATED");
    const fromB = await claim(b, "user-b", "ROTATED");
    expect(decodeProtectedHeader(fromA.body.receipt).kid).toBe("old");
    expect(decodeProtectedHeader(fromB.body.receipt).kid).toBe("new");
    for (const on of [a, b]) {
      expect((await verified(on, fromA)).payload).toMatchObject({ sub: "user-a", seq: 1 });
      expect((await verified(on, fromB)).payload).toMatchObject({ sub: "user-b", seq: 2 });
    }
  });

  it("are refused once tampered with: another user, another seq, or a signature moved to another payload", async () => {
    const a = replica("old");
    await a.createCoupon("TAMPERED", 5);
    const mine = await claim(a, "user-1", "TAMPERED");
    const theirs = await claim(a, "user-2", "TAMPERED");
    const [header, payload, signature] = mine.body.receipt.split(".");
    const edit = (change: Record<string, unknown>) =>
      Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(payload, "base64url").toString()), ...change })).toString(
        "base64url",
      );
    const forgeries = [
      `${header}.${edit({ sub: "mallory" })}.${signature}`,
      `${header}.${edit({ seq: 1_000 })}.${signature}`,
      `${header}.${payload}.${theirs.body.receipt.split(".")[2]}`,
    ];
    for (const receipt of forgeries) {
      await expect(verified(a, { ...mine, body: { receipt } })).rejects.toThrow("signature verification failed");
    }
  });
});

describe("GET /.well-known/jwks.json", () => {
  it("publishes every key of the set without its private part, cacheable, and answers 304 to its ETag", async () => {
    const a = replica("old");
    const res = await a.get("/.well-known/jwks.json");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/jwk-set+json");
    expect(res.headers.get("cache-control")).toBe("public, max-age=300");
    expect(res.body.keys.map((key: { kid: string }) => key.kid)).toEqual(["old", "new"]);
    expect(JSON.stringify(res.body)).not.toContain(old.d);
    expect(JSON.stringify(res.body)).not.toContain('"d"');
    const etag = res.headers.get("etag") as string;
    expect(etag).toMatch(/^"[A-Za-z0-9_-]{22}"$/);
    const again = await a.get("/.well-known/jwks.json", { "if-none-match": `"other", ${etag}` });
    expect(again.status).toBe(304);
    expect(again.body).toBe("");
    expect(again.headers.get("content-type")).toBeNull();
    expect(again.headers.get("etag")).toBe(etag);
    expect((await a.get("/.well-known/jwks.json", { "if-none-match": '"other"' })).status).toBe(200);
  });
});

describe("GET /api/coupons/{name}/claims/{user_id}", () => {
  it("answers the holder's claim with its seq; a re-claim after a release gets the next seq", async () => {
    const api = replica();
    await api.createCoupon("LOOKUP", 3);
    const first = await claim(api, "user-1", "LOOKUP");
    await claim(api, "user-2", "LOOKUP");
    const res = await held(api, "LOOKUP", "user-1");
    expect(res.status).toBe(200);
    expect(JSON.stringify(res.body)).toBe(
      JSON.stringify({ coupon_name: "LOOKUP", user_id: "user-1", claimed_at: first.body.claimed_at, seq: 1 }),
    );
    const released = await release(api, "LOOKUP", "user-1");
    expect(released.status).toBe(200);
    const gone = await held(api, "LOOKUP", "user-1");
    expect(gone.status).toBe(404);
    expect(gone.body).toMatchObject({
      code: "CLAIM_NOT_FOUND",
      detail: `This user's claim on this coupon was released at ${released.body.released_at}.`,
    });
    const again = await claim(api, "user-1", "LOOKUP");
    expect(again.body.seq).toBe(3);
    expect((await held(api, "LOOKUP", "user-1")).body.seq).toBe(3);
    expect((await api.getCoupon("LOOKUP")).body.claimed_by).toEqual(["user-2", "user-1"]);
  });

  it("answers CLAIM_NOT_FOUND for a user who never claimed it, COUPON_NOT_FOUND for no such coupon", async () => {
    const api = replica();
    await api.createCoupon("NEVER", 1);
    expect((await held(api, "NEVER", "user-9")).body).toMatchObject({
      status: 404,
      code: "CLAIM_NOT_FOUND",
      detail: "This user holds no claim on this coupon.",
    });
    expect((await held(api, "NO_SUCH", "user-9")).body).toMatchObject({ status: 404, code: "COUPON_NOT_FOUND" });
  });

  it("reads names as every route does: percent-encoded Unicode", async () => {
    const api = replica();
    await api.createCoupon("Été 2026", 1);
    await claim(api, "ünïcode", "Été 2026");
    expect((await held(api, "Été 2026", "ünïcode")).body).toMatchObject({ coupon_name: "Été 2026", seq: 1 });
  });
});
