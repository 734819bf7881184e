// Bearer tokens from the identity provider (AUTH_*): a JWT is accepted only when an asymmetric signature
// by one of the provider's keys verifies, it names the configured issuer and audience, and it is within
// its lifetime; it then says who the caller is (`sub`) and whether it may do what the admin scope allows.
// Every refusal is UNAUTHORIZED with RFC 6750's invalid_token; keys that cannot be had are a 503.
import { errors, type JWSHeaderParameters, type JWTPayload } from "jose";
import type { Config } from "../config";
import { AppError } from "../domain/errors";
import type { Logger } from "../log";
import { fileKeys, type IssuerKeys, remoteKeys } from "./issuer-keys";
import { type JwtChecks, verifyJwt } from "./jwt";
import { TOKEN_ALGORITHMS } from "./key-set";

/** Leeway on `exp` and `nbf` for clocks a little apart (the provider's and this host's). */
export const CLOCK_TOLERANCE_S = 30;

/** Who a verified token speaks for, and whether it carries the admin scope (AUTH_ADMIN_SCOPE). */
export interface Caller {
  subject: string;
  admin: boolean;
}

/** Verifies bearer tokens; `adminScope` is the scope or role that allows admin actions, if any. */
export interface TokenVerifier {
  /** The caller of a valid `token`; UNAUTHORIZED otherwise, SERVICE_UNAVAILABLE without keys by `deadline`. */
  verify(token: string, deadline: number): Promise<Caller>;
  readonly adminScope?: string;
  readonly keys: IssuerKeys;
}

/** The settings a verifier is made of (loadConfig has checked that they come together). */
export type AuthSettings = Pick<
  Config,
  "AUTH_ISSUER" | "AUTH_AUDIENCE" | "AUTH_JWKS_URL" | "AUTH_JWKS_FILE" | "AUTH_ADMIN_SCOPE"
>;

/**
 * Whether the token grants `scope`: listed in its `scope` (RFC 8693, RFC 9068), `scp` or `roles` claim,
 * each read as a space-separated string or an array of strings.
 */
export function grants(payload: JWTPayload, scope: string): boolean {
  const listed = (value: unknown) =>
    typeof value === "string" ? value.split(" ").includes(scope) : Array.isArray(value) && value.includes(scope);
  return listed(payload.scope) || listed(payload.scp) || listed(payload.roles);
}

/** Why a token is refused: each the detail of its 401 (and an example in the API documentation). */
export const tokenRefusals = {
  notJwt: "The bearer token is not a signed JWT.",
  algorithm: `The bearer token's algorithm is not accepted; accepted: ${TOKEN_ALGORITHMS.join(", ")}.`,
  unknownKey: "The bearer token's key is not one of the identity provider's keys.",
  signature: "The bearer token's signature does not verify.",
  expired: "The bearer token has expired.",
  notYetValid: "The bearer token is not valid yet.",
  otherIssuer: "The bearer token is from another issuer.",
  otherAudience: "The bearer token is for another audience.",
  noUser: 'The bearer token\'s "sub" claim is not a user id.',
} as const;

const refused = (detail: string) => new AppError("UNAUTHORIZED", detail, { tokenError: "invalid_token" });

/** A claim jose found wrong, in the problem's words. */
function claimDetail(error: InstanceType<typeof errors.JWTClaimValidationFailed>): string {
  if (error.reason === "missing") return `The bearer token has no "${error.claim}" claim.`;
  if (error.reason === "check_failed" && error.claim === "iss") return tokenRefusals.otherIssuer;
  if (error.reason === "check_failed" && error.claim === "aud") return tokenRefusals.otherAudience;
  if (error.reason === "check_failed" && error.claim === "nbf") return tokenRefusals.notYetValid;
  // A claim of the wrong type (an exp that is not a number).
  return `The bearer token's "${error.claim}" claim is not valid.`;
}

/** Why jose refused a token, as the 401's detail; undefined for an error that is not about the token. */
export function refusalDetail(error: unknown): string | undefined {
  if (error instanceof errors.JWTExpired) return tokenRefusals.expired;
  if (error instanceof errors.JWTClaimValidationFailed) return claimDetail(error);
  if (error instanceof errors.JOSEAlgNotAllowed) return tokenRefusals.algorithm;
  if (error instanceof errors.JWKSNoMatchingKey || error instanceof errors.JWKSMultipleMatchingKeys)
    return tokenRefusals.unknownKey;
  if (error instanceof errors.JWSSignatureVerificationFailed) return tokenRefusals.signature;
  // Malformed: not three base64url parts, a header or payload that is not a JSON object, an unknown crit.
  if (error instanceof errors.JOSEError || error instanceof TypeError) return tokenRefusals.notJwt;
  return undefined;
}

/** A verifier of tokens from `issuer` for `audience`, signed by one of `keys`. */
export function createTokenVerifier(options: {
  issuer: string;
  audience: string;
  keys: IssuerKeys;
  adminScope?: string;
}): TokenVerifier {
  const { issuer, audience, keys, adminScope } = options;
  const checks: JwtChecks = { issuer, audience, algorithms: TOKEN_ALGORITHMS, clockTolerance: CLOCK_TOLERANCE_S };
  return {
    adminScope,
    keys,
    async verify(token, deadline) {
      let payload: JWTPayload;
      try {
        const key = (header: JWSHeaderParameters) => keys.keyFor(header, deadline);
        payload = await verifyJwt(token, key, checks);
      } catch (error) {
        if (error instanceof AppError) throw error; // the keys could not be had
        const detail = refusalDetail(error);
        if (detail === undefined) throw error;
        throw refused(detail);
      }
      if (typeof payload.sub !== "string" || payload.sub === "") throw refused(tokenRefusals.noUser);
      return { subject: payload.sub, admin: adminScope !== undefined && grants(payload, adminScope) };
    },
  };
}

/** The verifier the AUTH_* settings describe (the file's keys read and checked now), or undefined when unset. */
export async function tokenVerifierFrom(settings: AuthSettings, log: Logger): Promise<TokenVerifier | undefined> {
  const { AUTH_ISSUER: issuer, AUTH_AUDIENCE: audience, AUTH_JWKS_URL: url, AUTH_JWKS_FILE: file } = settings;
  if (!issuer || !audience || (!url && !file)) return undefined;
  const keys = file ? await fileKeys(file) : remoteKeys(new URL(url as string), log);
  return createTokenVerifier({ issuer, audience, keys, adminScope: settings.AUTH_ADMIN_SCOPE });
}
