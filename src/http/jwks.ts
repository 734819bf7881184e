// GET /.well-known/jwks.json: the public keys that verify this service's claim receipts (the signing
// one and those kept for rotation), cacheable, with an ETag so verifiers revalidate for nothing.
import { createHash } from "node:crypto";
import { Elysia, t } from "elysia";
import type { ReceiptSigner } from "../identity/receipts";
import { documentedResponses } from "./openapi";

/** How long verifiers may cache the key set: a new key should be published this long before it signs. */
export const JWKS_MAX_AGE_SECONDS = 300;

const JwkSet = t.Object(
  {
    keys: t.Array(
      t.Object({
        kty: t.Literal("OKP"),
        crv: t.Literal("Ed25519"),
        x: t.String({ description: "The public key, base64url" }),
        kid: t.String({ description: "The receipt header's kid names it" }),
        alg: t.Literal("EdDSA"),
        use: t.Literal("sig"),
      }),
      { description: "Empty when the service signs no receipts" },
    ),
  },
  {
    examples: [
      {
        keys: [
          {
            kty: "OKP",
            crv: "Ed25519",
            x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
            kid: "2026-12",
            alg: "EdDSA",
            use: "sig",
          },
        ],
      },
    ],
  },
);

/** The JWK Set route; without a signer it publishes an empty set. */
export function jwksRoute(signer: ReceiptSigner | undefined) {
  const body = JSON.stringify(signer?.jwks ?? { keys: [] });
  const etag = `"${createHash("sha256").update(body).digest("base64url").slice(0, 22)}"`;
  // A 304 carries the caching headers a 200 would (RFC 9110), and no body to type.
  const validators = { "cache-control": `public, max-age=${JWKS_MAX_AGE_SECONDS}`, etag };
  const headers = { "content-type": "application/jwk-set+json", ...validators };
  return new Elysia().get(
    "/.well-known/jwks.json",
    ({ request, set }) => {
      // The set is fixed for the process's life: a matching If-None-Match is all a verifier needs.
      const matches = request.headers
        .get("if-none-match")
        ?.split(",")
        .some((tag) => tag.trim() === etag);
      set.status = matches ? 304 : 200;
      return new Response(matches ? null : body, { status: set.status, headers: matches ? validators : headers });
    },
    {
      detail: {
        tags: ["receipts"],
        summary: "The public keys that verify claim receipts",
        description:
          "A JWK Set (RFC 7517) of Ed25519 keys: the one signing receipts now and those still valid for receipts signed before a rotation. Cache it (Cache-Control, ETag); refetch when a receipt names a `kid` you do not have.",
        security: [],
        responses: documentedResponses("/.well-known/jwks.json", {
          200: {
            description: "The key set",
            schema: JwkSet,
            mediaType: "application/jwk-set+json",
            headers: ["Cache-Control", "ETag"],
          },
          304: { description: "Not modified: the If-None-Match tag is current", headers: ["Cache-Control", "ETag"] },
        }),
      },
    },
  );
}
