// Receipts, verified with jose (an independent JOSE implementation, not the code that signs them):
// what they say, that tampering is caught, and that the same claim gives the same receipt.
import { describe, expect, it } from "bun:test";
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from "jose";
import { parseReceiptKeys } from "../../src/identity/receipt-keys";
import { createReceiptSigner, receiptId } from "../../src/identity/receipts";
import { ed25519Jwk } from "../support/receipt-keys";

const keys = parseReceiptKeys(JSON.stringify({ keys: [ed25519Jwk("k1")] }), undefined, "test");
const claim = { coupon: "BLACK_FRIDAY", user: "user-42", seq: 7, claimedAt: new Date("2026-11-27T09:00:00.987Z") };
const verify = (receipt: string, jwks = keys.published) =>
  jwtVerify(receipt, createLocalJWKSet({ keys: jwks }), { issuer: "shop", algorithms: ["EdDSA"] });

describe("createReceiptSigner", () => {
  it("signs {iss, sub, coupon, seq, iat, jti} with EdDSA under the signing key's kid", async () => {
    const receipt = await createReceiptSigner(keys, { issuer: "shop" }).sign(claim);
    expect(decodeProtectedHeader(receipt)).toEqual({ alg: "EdDSA", typ: "JWT", kid: "k1" });
    const { payload } = await verify(receipt);
    expect(payload).toEqual({
      iss: "shop",
      sub: "user-42",
      coupon: "BLACK_FRIDAY",
      seq: 7,
      iat: Math.floor(claim.claimedAt.getTime() / 1000),
      jti: receiptId("shop", "BLACK_FRIDAY", 7),
    });
  });

  it("gives the same claim the same receipt, and another claim another id", async () => {
    const signer = createReceiptSigner(keys, { issuer: "shop" });
    expect(await signer.sign({ ...claim })).toBe(await signer.sign(claim));
    expect(receiptId("shop", "BLACK_FRIDAY", 8)).not.toBe(receiptId("shop", "BLACK_FRIDAY", 7));
    expect(receiptId("shop", "OTHER", 7)).not.toBe(receiptId("shop", "BLACK_FRIDAY", 7));
  });

  it("sets exp RECEIPT_TTL after iat, and jose refuses the receipt once it has passed", async () => {
    const receipt = await createReceiptSigner(keys, { issuer: "shop", ttlMs: 90_000 }).sign(claim);
    const { payload } = await verify(receipt, keys.published).catch(() => ({ payload: undefined }));
    expect(payload).toBeUndefined(); // 2026-11-27 + 90 s is long past
    const fresh = await createReceiptSigner(keys, { issuer: "shop", ttlMs: 90_000 }).sign({
      ...claim,
      claimedAt: new Date(),
    });
    const verified = await verify(fresh);
    expect((verified.payload.exp as number) - (verified.payload.iat as number)).toBe(90);
  });

  it("makes receipts that fail verification once tampered with, or against another key", async () => {
    const receipt = await createReceiptSigner(keys, { issuer: "shop" }).sign(claim);
    const [header, payload, signature] = receipt.split(".") as [string, string, string];
    const forged = Buffer.from(
      JSON.stringify({ ...JSON.parse(Buffer.from(payload, "base64url").toString()), sub: "mallory" }),
    ).toString("base64url");
    await expect(verify(`${header}.${forged}.${signature}`)).rejects.toThrow("signature verification failed");
    const flipped = `${signature.slice(0, 10)}${signature[10] === "A" ? "B" : "A"}${signature.slice(11)}`;
    await expect(verify(`${header}.${payload}.${flipped}`)).rejects.toThrow();
    const stranger = parseReceiptKeys(JSON.stringify(ed25519Jwk("k1")), undefined, "test").published;
    await expect(verify(receipt, stranger)).rejects.toThrow("signature verification failed");
    await expect(verify(receipt, [])).rejects.toThrow();
  });
});
