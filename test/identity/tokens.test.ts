// Bearer JWTs as the identity layer verifies them, against an issuer in this process: who a valid token
// speaks for, every way a token is refused (each an UNAUTHORIZED with invalid_token, never anything
// else), the admin scope in scope, scp or roles, and keys that cannot be had (a 503, within the deadline).
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { AppError } from "../../src/domain/errors";
import { CLOCK_TOLERANCE_S, grants, refusalDetail, type TokenVerifier } from "../../src/identity/tokens";
import { AUDIENCE, ISSUER, startIssuer, type TestIssuer } from "../support/issuer";

let issuer: TestIssuer;
let verifier: TokenVerifier;
const soon = () => performance.now() + 5000;

beforeAll(async () => {
  issuer = await startIssuer();
  verifier = issuer.verifier({ adminScope: "coupons:admin" });
});
afterAll(() => issuer.stop());

/** The AppError `verify` rejects with (fails the test if it resolves or throws anything else). */
async function refusal(token: string, deadline = soon()): Promise<AppError> {
  const error = await verifier.verify(token, deadline).then(
    () => undefined,
    (thrown: unknown) => thrown,
  );
  expect(error).toBeInstanceOf(AppError);
  return error as AppError;
}

describe("verify", () => {
  it("gives the subject of a valid RS256 token, without the admin scope it does not carry", async () => {
    expect(await verifier.verify(await issuer.mint("user-42"), soon())).toEqual({ subject: "user-42", admin: false });
  });

  it.each([
    ["scope (space-separated)", { scope: "openid coupons:admin profile" }],
    ["scp as an array", { scp: ["coupons:read", "coupons:admin"] }],
    ["scp as a string", { scp: "coupons:admin" }],
    ["roles as an array", { roles: ["coupons:admin"] }],
    ["roles as a string", { roles: "coupons:reader coupons:admin" }],
  ])("grants the admin scope listed in %s", async (_, claims) => {
    const caller = await verifier.verify(await issuer.mint("ops", { claims }), soon());
    expect(caller).toEqual({ subject: "ops", admin: true });
  });

  it.each([
    ["a longer scope that starts with it", { scope: "coupons:admin-readonly" }],
    ["a role of another name", { roles: ["coupons:reader"] }],
    ["a scope with another case", { scope: "Coupons:Admin" }],
    ["no scope at all", {}],
  ])("does not grant it for %s", async (_, claims) => {
    expect((await verifier.verify(await issuer.mint("ops", { claims }), soon())).admin).toBe(false);
  });

  const refused: [string, () => Promise<string> | string, string][] = [
    ["an empty string", () => "", "The bearer token is not a signed JWT."],
    ["an opaque token", () => "s3cret-token-0123456789", "The bearer token is not a signed JWT."],
    [
      "two parts",
      async () => (await issuer.mint("user-42")).split(".").slice(0, 2).join("."),
      "The bearer token is not a signed JWT.",
    ],
    [
      "a header that is not JSON",
      async () => `bm90IGpzb24.${(await issuer.mint("user-42")).split(".").slice(1).join(".")}`,
      "The bearer token is not a signed JWT.",
    ],
    [
      "an expired token",
      () => issuer.mint("user-42", { expiresIn: -(CLOCK_TOLERANCE_S + 60) }),
      "The bearer token has expired.",
    ],
    [
      "a token not valid yet",
      () => issuer.mint("user-42", { notBefore: CLOCK_TOLERANCE_S + 60 }),
      "The bearer token is not valid yet.",
    ],
    [
      "another issuer's token",
      () => issuer.mint("user-42", { issuer: "https://elsewhere.test/" }),
      "The bearer token is from another issuer.",
    ],
    [
      "a token for another audience",
      () => issuer.mint("user-42", { audience: "another-api" }),
      "The bearer token is for another audience.",
    ],
    [
      "alg none",
      () => issuer.forged.none("user-42"),
      "The bearer token's algorithm is not accepted; accepted: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA, Ed25519.",
    ],
    [
      "HS256 signed with the public key",
      () => issuer.forged.hmacWithPublicKey("user-42"),
      "The bearer token's algorithm is not accepted; accepted: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA, Ed25519.",
    ],
    [
      "a signature by a foreign key under the issuer's kid",
      () => issuer.forged.foreignKey("user-42"),
      "The bearer token's signature does not verify.",
    ],
    [
      "a kid the issuer never published",
      () => issuer.forged.unknownKid("user-42"),
      "The bearer token's key is not one of the identity provider's keys.",
    ],
    [
      "a tampered payload",
      async () => {
        const [header, , signature] = (await issuer.mint("user-42")).split(".");
        const payload = Buffer.from(JSON.stringify({ sub: "admin", iss: ISSUER, aud: AUDIENCE, exp: 4e9 })).toString(
          "base64url",
        );
        return `${header}.${payload}.${signature}`;
      },
      "The bearer token's signature does not verify.",
    ],
  ];
  it.each(refused)("refuses %s with UNAUTHORIZED and invalid_token", async (_, token, detail) => {
    const error = await refusal(await token());
    expect({ code: error.code, tokenError: error.tokenError, detail: error.message }).toEqual({
      code: "UNAUTHORIZED",
      tokenError: "invalid_token",
      detail,
    });
  });

  it("refuses a token that has no sub, or an empty one", async () => {
    expect((await refusal(await issuer.mint(null))).message).toBe('The bearer token has no "sub" claim.');
    expect((await refusal(await issuer.mint(""))).message).toBe('The bearer token\'s "sub" claim is not a user id.');
  });

  it("refuses a token whose nbf is not a number, naming the claim", async () => {
    const token = await issuer.mint("user-42", { claims: { nbf: "soon" as unknown as number } });
    expect((await refusal(token)).message).toBe('The bearer token\'s "nbf" claim is not valid.');
  });

  it("accepts a token within the clock tolerance of its exp and nbf", async () => {
    const late = await issuer.mint("user-42", { expiresIn: -(CLOCK_TOLERANCE_S - 10) });
    const early = await issuer.mint("user-42", { notBefore: CLOCK_TOLERANCE_S - 10 });
    expect((await verifier.verify(late, soon())).subject).toBe("user-42");
    expect((await verifier.verify(early, soon())).subject).toBe("user-42");
  });
});

describe("grants", () => {
  it("reads scope, scp and roles as strings or arrays, and nothing else", () => {
    expect(grants({ scope: "a b" }, "b")).toBe(true);
    expect(grants({ scp: ["b"] }, "b")).toBe(true);
    expect(grants({ roles: ["b"] }, "b")).toBe(true);
    expect(grants({ scope: "ab" }, "b")).toBe(false);
    expect(grants({ permissions: ["b"] }, "b")).toBe(false);
    expect(grants({ scope: 7 as unknown as string }, "7")).toBe(false);
  });
});

describe("refusalDetail", () => {
  it("leaves errors that are not about the token to the caller (a 500, logged)", () => {
    expect(refusalDetail(new RangeError("a bug"))).toBeUndefined();
  });
});
