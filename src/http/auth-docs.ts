// The OpenAPI side of auth.ts: with bearer JWTs (AUTH_*), the claim declares the user's JWT and its
// 401/403 answers, and with AUTH_ADMIN_SCOPE the writes declare ADMIN_TOKEN or a JWT with that scope.
// Without them every route is documented as it was (coupon-docs.ts alone).
import type { DocumentDecoration } from "elysia";
import type { Failure } from "../domain/errors";
import { keysFailures } from "../identity/issuer-keys";
import { type TokenVerifier, tokenRefusals } from "../identity/tokens";
import { type AdminAction, CLAIM_NEEDS_TOKEN, FORBIDDEN_USER_DETAIL } from "./auth";
import { type DocumentedResponse, documentedResponses } from "./openapi";

/** Adds the schemes and answers of bearer JWTs to a route's documentation (unchanged when they are off). */
export interface AuthDocs {
  claim(docs: DocumentDecoration): DocumentDecoration;
  /** `instance`: the example path of the route, as its other problems show it. */
  admin(docs: DocumentDecoration, action: AdminAction, instance: string): DocumentDecoration;
}

/** The security schemes of bearer JWTs, for components.securitySchemes beside adminToken; none when off. */
export function jwtSchemes(tokens: TokenVerifier | undefined): Record<string, object> {
  if (!tokens) return {};
  const jwt = (description: string) => ({ type: "http", scheme: "bearer", bearerFormat: "JWT", description });
  return {
    userJwt: jwt(
      "The user's access token from the identity provider (AUTH_ISSUER): its sub must be the claim's user_id",
    ),
    ...(tokens.adminScope
      ? {
          adminJwt: jwt(
            `An access token from the identity provider whose scope, scp or roles lists ${tokens.adminScope}: creates, changes and releases`,
          ),
        }
      : {}),
  };
}

const invalid = (detail: string): Failure => ({ code: "UNAUTHORIZED", detail });

/** What a token that is given but refused is answered, by why (each provoked by test/http/openapi-auth.test.ts). */
const invalidTokens = Object.fromEntries(
  Object.entries(tokenRefusals).map(([why, detail]) => [why, invalid(detail)]),
) as Record<keyof typeof tokenRefusals, Failure>;

type Examples = Record<string, { summary: string; value: unknown }>;
type Responses = Record<string, { description: string; content: Record<string, { examples?: Examples }> }>;

/**
 * The responses of `docs` with those of `answers` (401, 403) in place of its own, and the 503 that
 * also says the identity provider's keys may be unavailable.
 */
function withResponses(docs: DocumentDecoration, instance: string, answers: Record<number, DocumentedResponse>) {
  const keys = { keysUnavailable: keysFailures.unavailable, keysLate: keysFailures.late };
  const added = documentedResponses(instance, { ...answers, 503: { description: "", problems: keys } }) as Responses;
  const { 503: keysAnswer, ...replaced } = added;
  const responses = { ...(docs.responses as Responses), ...replaced };
  const own = responses[503] as Responses[string];
  const problems = own.content["application/problem+json"] as { examples?: Examples };
  const examples = { ...problems.examples, ...keysAnswer?.content["application/problem+json"]?.examples };
  responses[503] = {
    ...own,
    description: `${own.description}; or the identity provider's keys unavailable or late`,
    content: { "application/problem+json": { ...problems, examples } },
  };
  return responses;
}

/** The documentation of the routes under `adminToken` (ADMIN_TOKEN) and `tokens` (AUTH_*). */
export function authDocs(adminToken: string | undefined, tokens: TokenVerifier | undefined): AuthDocs {
  const same = (docs: DocumentDecoration) => docs;
  if (!tokens) return { claim: same, admin: same };
  const scope = tokens.adminScope;
  const claim = (docs: DocumentDecoration): DocumentDecoration => ({
    ...docs,
    description: `${docs.description}\n\nRequires \`Authorization: Bearer <JWT>\` from the identity provider: an asymmetric signature by one of its keys, its issuer and this API's audience, within its lifetime, and \`sub\` equal to \`user_id\` (else 403 FORBIDDEN_USER).`,
    security: [{ userJwt: [] }],
    responses: withResponses(docs, "/api/coupons/claim", {
      401: {
        description: "No bearer token, or one that is not valid (UNAUTHORIZED)",
        problems: { missingToken: invalid(CLAIM_NEEDS_TOKEN), ...invalidTokens },
      },
      403: {
        description: "The token is another user's (FORBIDDEN_USER)",
        problems: { FORBIDDEN_USER: { code: "FORBIDDEN_USER", detail: FORBIDDEN_USER_DETAIL } },
      },
    }),
  });
  if (!scope) return { claim, admin: same };
  const admin = (docs: DocumentDecoration, action: AdminAction, instance: string): DocumentDecoration => {
    const doing = `${action[0]?.toUpperCase()}${action.slice(1)}`;
    return {
      ...docs,
      description: `${docs.description}\n\nRequires ADMIN_TOKEN${adminToken ? "" : " (unset here)"} or a JWT from the identity provider whose scope, scp or roles lists \`${scope}\`.`,
      security: [...(adminToken ? [{ adminToken: [] }] : []), { adminJwt: [scope] }],
      responses: withResponses(docs, instance, {
        401: {
          description: "No bearer token, or one that is neither ADMIN_TOKEN nor a valid JWT (UNAUTHORIZED)",
          problems: {
            UNAUTHORIZED: invalid(`${doing} coupons requires Authorization: Bearer <token>.`),
            ...invalidTokens,
          },
        },
        403: {
          description: `A valid JWT without ${scope} (FORBIDDEN)`,
          headers: ["WWW-Authenticate"],
          problems: {
            insufficientScope: {
              code: "FORBIDDEN",
              detail: `The bearer token lacks the scope ${scope} needed for ${action} coupons.`,
            },
          },
        },
      }),
    };
  };
  return { claim, admin };
}
