// Who may do what, checked at the HTTP edge before anything is queued: ADMIN_TOKEN guards creating,
// changing and releasing; with AUTH_* a claim needs the bearer JWT of the user it claims for, and a JWT
// with AUTH_ADMIN_SCOPE may do what ADMIN_TOKEN does. With neither, every route is open, as it was.
import { timingSafeEqual } from "node:crypto";
import { AppError } from "../domain/errors";
import type { TokenVerifier } from "../identity/tokens";

/** What an admin check guards, as its problem's detail says it. */
export type AdminAction = "creating" | "changing";

/** The checks of the routes that need one; a route whose check is undefined is open. */
export interface Access {
  /** A claim by `user`: the bearer JWT's `sub` must be `user` (FORBIDDEN_USER otherwise). */
  claim?: (authorization: string | undefined, user: string, deadline: number) => Promise<void>;
  /** Creating, changing or releasing: ADMIN_TOKEN, or a JWT carrying the admin scope. */
  admin?: (authorization: string | undefined, action: AdminAction, deadline: number) => Promise<void>;
}

/** The token of an `Authorization: Bearer <token>` header (the scheme in any case), or undefined. */
function bearerToken(authorization: string | undefined): string | undefined {
  if (!authorization || authorization.length <= 7 || authorization.slice(0, 7).toLowerCase() !== "bearer ")
    return undefined;
  return authorization.slice(7);
}

/** Whether `given` is `expected`, compared in constant time (length leaks nothing useful: tokens are fixed-size secrets). */
function sameToken(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

const capitalized = (action: string) => `${action[0]?.toUpperCase()}${action.slice(1)}`;

/** The detail of a claim refused for another user's token (shown in the API documentation). */
export const FORBIDDEN_USER_DETAIL = "The bearer token is another user's: a token claims only for its own sub.";

/** The detail of a claim without a bearer token (shown in the API documentation). */
export const CLAIM_NEEDS_TOKEN = "Claiming a coupon requires Authorization: Bearer <JWT> from the identity provider.";

/** The checks for ADMIN_TOKEN (`adminToken`) and bearer JWTs (`tokens`); both optional. */
export function accessRules(adminToken: string | undefined, tokens: TokenVerifier | undefined): Access {
  const access: Access = {};
  const adminScope = tokens?.adminScope;
  if (tokens) {
    access.claim = async (authorization, user, deadline) => {
      const token = bearerToken(authorization);
      if (!token) throw new AppError("UNAUTHORIZED", CLAIM_NEEDS_TOKEN);
      const caller = await tokens.verify(token, deadline);
      if (caller.subject !== user) throw new AppError("FORBIDDEN_USER", FORBIDDEN_USER_DETAIL);
    };
  }
  if (adminToken || adminScope) {
    access.admin = async (authorization, action, deadline) => {
      const token = bearerToken(authorization);
      if (!token)
        throw new AppError("UNAUTHORIZED", `${capitalized(action)} coupons requires Authorization: Bearer <token>.`);
      if (adminToken && sameToken(token, adminToken)) return;
      // Not the admin token: without an admin scope no JWT may stand in for it.
      if (!tokens || !adminScope)
        throw new AppError("FORBIDDEN", `The bearer token is not valid for ${action} coupons.`);
      const caller = await tokens.verify(token, deadline);
      if (!caller.admin) {
        const detail = `The bearer token lacks the scope ${adminScope} needed for ${action} coupons.`;
        throw new AppError("FORBIDDEN", detail, { tokenError: "insufficient_scope" });
      }
    };
  }
  return access;
}
