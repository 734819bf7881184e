// The identity provider's public keys, where token verification asks for them: read once from a file
// (AUTH_JWKS_FILE, for air-gapped setups), or fetched from its URL (AUTH_JWKS_URL) and kept, refetched
// when they grow old or a token names a key the set lacks (the provider rotated), never more often than
// a cooldown allows, so a flood of tokens with made-up key ids cannot hammer the provider.
import { readFileSync } from "node:fs";
import { errors, type JWSHeaderParameters } from "jose";
import { invalidSetting } from "../config";
import { type Failure, fail } from "../domain/errors";
import { errorFields, type Logger } from "../log";
import { type KeySet, readKeySet } from "./key-set";

/** The key for a token's header, waiting for a fetch at most until `deadline` (performance.now()). */
export interface IssuerKeys {
  keyFor(header: JWSHeaderParameters, deadline: number): Promise<CryptoKey>;
  /** Key set documents requested so far (always 0 for a file). */
  readonly fetches: number;
  /** Fetches the set ahead of the first token (at start); resolves whether or not it arrived. */
  warm(): Promise<void>;
}

/** How a fetched set is kept; the defaults suit production, tests shorten them. */
export interface FetchPolicy {
  /** A set this old is refetched on the next token, which the old set still verifies meanwhile. */
  maxAgeMs: number;
  /** The least time between two fetches while a set is held: an unknown key id waits it out as a 401. */
  cooldownMs: number;
  /** The least time between two fetches while no set is held (the provider down at start). */
  retryMs: number;
  /** A fetch that has not answered after this long has failed. */
  timeoutMs: number;
}

/** The timings main.ts uses: a set kept 10 min, an unknown kid refetched at most every 30 s, 1 s between failures. */
export const defaultFetchPolicy: FetchPolicy = {
  maxAgeMs: 600_000,
  cooldownMs: 30_000,
  retryMs: 1000,
  timeoutMs: 5000,
};

// A set is a few keys; anything far bigger is not one.
const MAX_DOCUMENT_BYTES = 1 << 20;

/** SERVICE_UNAVAILABLE answers while the keys cannot be had (shown in the API documentation). */
export const keysFailures = {
  unavailable: { code: "SERVICE_UNAVAILABLE", detail: "The identity provider's keys are unavailable; retry shortly." },
  late: { code: "SERVICE_UNAVAILABLE", detail: "The identity provider's keys did not arrive in time." },
} as const satisfies Record<string, Failure>;

/** The keys of the JWKS file at `path`, read and checked now; a start-up error naming the file otherwise. */
export async function fileKeys(path: string): Promise<IssuerKeys> {
  let set: KeySet;
  try {
    set = await readKeySet(JSON.parse(readFileSync(path, "utf8")));
  } catch (error) {
    throw invalidSetting("AUTH_JWKS_FILE", path, error instanceof Error ? error.message : String(error));
  }
  return { keyFor: (header) => set.lookup(header), fetches: 0, warm: async () => {} };
}

/** `work`, or SERVICE_UNAVAILABLE once `deadline` passes first (the work goes on, for later requests). */
async function within<T>(work: Promise<T>, deadline: number): Promise<T> {
  const left = deadline - performance.now();
  if (left <= 0) throw fail(keysFailures.late);
  let timer: Timer | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(fail(keysFailures.late)), left);
  });
  try {
    return await Promise.race([work, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** The URL as logs show it: no user name or password. */
function shownUrl(url: URL): string {
  const shown = new URL(url);
  shown.username = "";
  shown.password = "";
  return shown.href;
}

/** The keys published at `url`, fetched on first use (or `warm`) and kept under `policy`. */
export function remoteKeys(url: URL, log: Logger, policy: FetchPolicy = defaultFetchPolicy): IssuerKeys {
  let set: KeySet | undefined;
  let loadedAt = Number.NEGATIVE_INFINITY;
  let lastStart = Number.NEGATIVE_INFINITY;
  let pending: Promise<void> | undefined;
  let fetches = 0;
  const jwksUrl = shownUrl(url);

  const download = async (): Promise<KeySet> => {
    const response = await fetch(url, {
      redirect: "manual",
      signal: AbortSignal.timeout(policy.timeoutMs),
      headers: { accept: "application/jwk-set+json, application/json" },
    });
    if (response.status !== 200) throw new Error(`answered ${response.status}, expected 200`);
    const text = await response.text();
    if (text.length > MAX_DOCUMENT_BYTES) throw new Error(`answered ${text.length} characters, over 1 MiB`);
    return readKeySet(JSON.parse(text));
  };
  // One fetch at a time; every request that needs it waits for the same one.
  const refresh = (): Promise<void> => {
    if (pending) return pending;
    lastStart = performance.now();
    fetches++;
    pending = download()
      .then(
        (fresh) => {
          set = fresh;
          loadedAt = performance.now();
          log.info("identity provider keys fetched", { jwks_url: jwksUrl, signing_keys: fresh.signingKeys });
        },
        (error) => {
          log.warn("identity provider keys unavailable", { jwks_url: jwksUrl, ...errorFields(error) });
          throw fail(keysFailures.unavailable, error);
        },
      )
      .finally(() => {
        pending = undefined;
      });
    return pending;
  };
  const mayFetch = (gapMs: number) => performance.now() - lastStart >= gapMs;

  return {
    get fetches() {
      return fetches;
    },
    warm: () => refresh().catch(() => {}),
    async keyFor(header, deadline) {
      if (!set) {
        if (!pending && !mayFetch(policy.retryMs)) throw fail(keysFailures.unavailable);
        await within(refresh(), deadline);
      } else if (performance.now() - loadedAt >= policy.maxAgeMs && !pending && mayFetch(policy.cooldownMs)) {
        refresh().catch(() => {}); // in the background: the set held verifies meanwhile
      }
      const held = set as KeySet;
      try {
        return await held.lookup(header);
      } catch (error) {
        if (!(error instanceof errors.JWKSNoMatchingKey)) throw error;
        // A key id the set lacks: the provider may have rotated. Refetch, unless one is too recent.
        if (!pending && !mayFetch(policy.cooldownMs)) throw error;
        await within(refresh(), deadline);
        return (set as KeySet).lookup(header);
      }
    },
  };
}
