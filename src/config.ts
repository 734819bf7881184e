// Environment read once at start-up and validated as a whole, so a misconfigured deployment
// fails with every problem listed in one message instead of one at a time.
import { type Static, Type } from "@sinclair/typebox";
import { Value } from "@sinclair/typebox/value";
import { logLevels, requestLogModes } from "./log";

// A duration setting's form; its error says what a duration looks like, not this expression.
// At most six digits: PostgreSQL refuses an interval past about 178 million years.
const DURATION_PATTERN = "^([1-9][0-9]{0,5})(ms|s|m|h|d)$";

// One scope token of RFC 6749 (section 3.3): printable ASCII but the space, `"` and `\`.
const SCOPE_PATTERN = "^[\\x21\\x23-\\x5B\\x5D-\\x7E]+$";
const SCOPE_EXPECTED = 'expected one scope: printable ASCII without spaces, " or \\';
const JWKS_URL_EXPECTED = "expected an http(s) URL";

const Int = (min: number, max: number, def: number, description: string) =>
  Type.Integer({ minimum: min, maximum: max, default: def, description });

export const ConfigSchema = Type.Object({
  DATABASE_URL: Type.Optional(
    Type.String({
      pattern: "^postgres(ql)?://",
      description: "PostgreSQL URL (postgres://…); unset: embedded PGlite (single instance only)",
    }),
  ),
  LISTEN_DATABASE_URL: Type.Optional(
    Type.String({
      pattern: "^postgres(ql)?://",
      description:
        "where the change feed LISTENs; unset: DATABASE_URL; behind a transaction pooler, the PostgreSQL server itself (operations.md)",
    }),
  ),
  MIGRATION_DATABASE_URL: Type.Optional(
    Type.String({
      pattern: "^postgres(ql)?://",
      description:
        "where migrations run, over one connection of their own, closed after; unset: DATABASE_URL; behind a pooler, the primary itself",
    }),
  ),
  DATA_DIR: Type.String({
    minLength: 1,
    default: "./data",
    description: "PGlite data folder (embedded mode); locked against a second process",
  }),
  PORT: Int(0, 65535, 3000, "port to listen on for HTTP"),
  HOST: Type.String({ minLength: 1, default: "0.0.0.0", description: "address to listen on for HTTP" }),
  LOG_LEVEL: Type.Union(
    logLevels.map((level) => Type.Literal(level)),
    { default: "info", description: "debug, info, warn, error or silent" },
  ),
  LOG_REQUESTS: Type.Union(
    requestLogModes.map((mode) => Type.Literal(mode)),
    {
      default: "all",
      description: "request lines at info: all, errors (5xx only) or none; probes and docs assets only at debug",
    },
  ),
  DATABASE_POOL_MAX: Int(1, 1000, 10, "PostgreSQL connections per instance"),
  DATABASE_CONNECT_TIMEOUT_MS: Int(100, 600_000, 3000, "give up connecting after this long"),
  DATABASE_STATEMENT_TIMEOUT_MS: Int(
    100,
    600_000,
    5000,
    "server-side statement_timeout and lock_timeout; idle_in_transaction_session_timeout twice that (operations.md)",
  ),
  // 256: measured best with bench/ (docs/benchmarks.md); 1024 was no faster and holds the lock 4x longer.
  CLAIM_BATCH_MAX: Int(1, 10_000, 256, "claims on one coupon decided per locked transaction (1 = one per transaction)"),
  CLAIM_QUEUE_MAX: Int(1, 1_000_000, 10_000, "claims waiting per coupon before 503 + Retry-After"),
  PENDING_MAX: Int(1, 10_000_000, 50_000, "claims waiting in the whole process before 503 + Retry-After"),
  OVERLOAD_REFUSAL_DELAY_MS: Int(
    0,
    60_000,
    1000,
    "a claim refused for overload gets its 503 after this long (never past its deadline)",
  ),
  SOLD_OUT_CACHE_MAX: Int(
    0,
    10_000_000,
    100_000,
    "claimers held in memory per coupon answered from memory (larger ones are decided by the database)",
  ),
  SOLD_OUT_CACHE_BYTES: Int(
    0,
    68_719_476_736,
    134_217_728,
    "bytes of claimer ids held in memory for the whole process (default 128 MiB); oldest coupons forgotten first",
  ),
  SCHEDULE_MARGIN_MS: Int(
    0,
    600_000,
    1000,
    "claims closer than this to a sale's opening or end (database clock) go to the database instead of memory",
  ),
  BODY_BYTES_IN_FLIGHT_MAX: Int(
    65_536,
    68_719_476_736,
    67_108_864,
    "request-body bytes being read at once, whole process (default 64 MiB); past it 503 + Retry-After",
  ),
  COUPON_READ_STREAMS_MAX: Int(
    1,
    1000,
    4,
    "reads of coupons with more than a page of claimers streamed at once; the rest wait within their deadline, then 503",
  ),
  COUPON_READ_PAGE_SIZE: Int(
    100,
    100_000,
    1000,
    "claimers per page of a streamed read, and the most answered from one statement",
  ),
  REQUEST_TIMEOUT_MS: Int(
    100,
    600_000,
    10_000,
    'deadline from arrival for claims, creates and reads; past it 503 (architecture.md, "Overload and deadlines")',
  ),
  SHUTDOWN_GRACE_MS: Int(0, 600_000, 10_000, "time in-flight requests get on SIGTERM, after SHUTDOWN_DELAY_MS"),
  SHUTDOWN_DELAY_MS: Int(0, 600_000, 0, "on SIGTERM, keep serving this long (readiness already 503) before draining"),
  MEMORY_LEASE_MS: Int(
    0,
    60_000,
    500,
    "answers from memory hold this long after the change feed last proved it hears every change; releases and PATCHes wait it out (0: nothing answered from memory)",
  ),
  IDEMPOTENCY_TTL: Type.String({
    pattern: DURATION_PATTERN,
    default: "24h",
    description: "how long an Idempotency-Key's answer is kept: a whole number with ms, s, m, h or d (24h, 90s)",
  }),
  IDEMPOTENCY_SWEEP_MS: Int(100, 86_400_000, 60_000, "how often each instance deletes expired Idempotency-Keys"),
  ADMIN_TOKEN: Type.Optional(
    Type.String({
      minLength: 16,
      description:
        "when set (16+ characters), creating, changing and releasing (POST, PATCH, DELETE) require Authorization: Bearer <token>",
    }),
  ),
  RECEIPT_KEYS: Type.Optional(
    Type.String({
      minLength: 2,
      description:
        'Ed25519 keys that sign claim receipts, as a JWK Set ({"keys": [...]}); unset: RECEIPT_KEYS_FILE, else embedded mode makes one in DATA_DIR, else no receipts',
    }),
  ),
  RECEIPT_KEYS_FILE: Type.Optional(
    Type.String({
      minLength: 1,
      description: "a file holding the receipt keys' JWK Set (a mounted Secret), instead of RECEIPT_KEYS",
    }),
  ),
  RECEIPT_SIGNING_KEY: Type.Optional(
    Type.String({
      minLength: 1,
      description:
        "kid of the key that signs receipts; unset: the set's only private key (the others are published for verification)",
    }),
  ),
  RECEIPT_ISSUER: Type.String({ minLength: 1, default: "coupon-service", description: "a receipt's iss" }),
  RECEIPT_TTL: Type.Optional(
    Type.String({
      pattern: DURATION_PATTERN,
      description: "when set, receipts expire (exp) this long after the claim, e.g. 15m; unset: no exp",
    }),
  ),
  // Bearer JWTs from an identity provider: all of issuer, audience and one source of keys, or none.
  AUTH_ISSUER: Type.Optional(
    Type.String({
      minLength: 1,
      description:
        "the identity provider's issuer (iss); set with AUTH_AUDIENCE and keys, a claim requires Authorization: Bearer <JWT> whose sub is its user_id",
    }),
  ),
  AUTH_AUDIENCE: Type.Optional(
    Type.String({ minLength: 1, description: "the audience (aud) tokens must name: this API at the provider" }),
  ),
  AUTH_JWKS_URL: Type.Optional(
    Type.String({
      pattern: "^https?://",
      description:
        "the provider's JWK Set URL: fetched at start, kept 10 min, fetched again for an unknown kid at most every 30 s",
    }),
  ),
  AUTH_JWKS_FILE: Type.Optional(
    Type.String({
      minLength: 1,
      description: "a JWK Set JSON file instead of AUTH_JWKS_URL (air-gapped setups), read at start: restart to rotate",
    }),
  ),
  AUTH_ADMIN_SCOPE: Type.Optional(
    Type.String({
      pattern: SCOPE_PATTERN,
      description:
        "a token listing this in scope, scp or roles may create, change and release too; set: those require ADMIN_TOKEN or such a token",
    }),
  ),
});

export type Config = Static<typeof ConfigSchema>;

const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

const DURATION = new RegExp(DURATION_PATTERN);

/** A duration setting ("24h", "90s", "500ms") in milliseconds; loadConfig has checked its form. */
export function durationMs(value: string): number {
  const [, amount, unit] = DURATION.exec(value) ?? [];
  return Number(amount) * UNIT_MS[unit as keyof typeof UNIT_MS];
}

const URL_EXPECTED = "expected postgres://user:password@host:5432/database (a URL postgres.js can parse)";

/** Whether postgres.js can parse `url`; like it, reads only the first of a comma-separated host list. */
function parsesAsUrl(url: string): boolean {
  const hosts = url.slice(url.indexOf("://") + 3).split(/[?/]/)[0] ?? "";
  return URL.canParse(url.replace(hosts, hosts.split(",")[0] ?? ""));
}

/** A rejected value as the error shows it: secrets never (a URL's password, the admin token, private keys). */
function shown(key: string, value: string | undefined): string {
  if (key === "ADMIN_TOKEN" || key === "RECEIPT_KEYS") return `<${value?.length ?? 0} characters>`;
  if ((key.endsWith("DATABASE_URL") || key === "AUTH_JWKS_URL") && value)
    return JSON.stringify(value.replace(/^([^:/]*:\/\/[^:@/]*:)[^@/]*@/, "$1***@"));
  return JSON.stringify(value);
}

/** The error a start-up ends with over bad settings, one line per problem; main.ts logs it alone. */
export function invalidConfiguration(problems: readonly string[]): Error {
  return new Error(`Invalid configuration:\n  - ${problems.join("\n  - ")}`);
}

/** The same error for one setting read outside ConfigSchema (the OTEL_* variables). */
export function invalidSetting(key: string, value: string, expected: string): Error {
  return invalidConfiguration([`${key}=${JSON.stringify(value)}: ${expected}`]);
}

const AUTH_SETTINGS = ["AUTH_ISSUER", "AUTH_AUDIENCE", "AUTH_JWKS_URL", "AUTH_JWKS_FILE", "AUTH_ADMIN_SCOPE"] as const;

/** What is wrong with the AUTH_* settings together: tokens are checked with issuer, audience and keys, or not at all. */
function authProblems(candidate: Record<string, unknown>, raw: Record<string, string>): string[] {
  const given = AUTH_SETTINGS.filter((key) => candidate[key] !== undefined);
  if (given.length === 0) return [];
  const problems: string[] = [];
  const missing = [
    ...(candidate.AUTH_ISSUER === undefined ? ["AUTH_ISSUER (the tokens' iss)"] : []),
    ...(candidate.AUTH_AUDIENCE === undefined ? ["AUTH_AUDIENCE (the tokens' aud)"] : []),
    ...(candidate.AUTH_JWKS_URL === undefined && candidate.AUTH_JWKS_FILE === undefined
      ? ["AUTH_JWKS_URL or AUTH_JWKS_FILE (the issuer's keys)"]
      : []),
  ];
  if (missing.length > 0) {
    const named = given.length === 1 ? `${given[0]} is` : `${given.slice(0, -1).join(", ")} and ${given.at(-1)} are`;
    problems.push(
      `${named} set without ${missing.join(" and without ")}: bearer tokens need an issuer, an audience and keys together`,
    );
  }
  if (candidate.AUTH_JWKS_URL !== undefined && candidate.AUTH_JWKS_FILE !== undefined) {
    problems.push("AUTH_JWKS_URL and AUTH_JWKS_FILE are both set: the keys come from one of them");
  }
  const url = raw.AUTH_JWKS_URL;
  const listed = problems.some((problem) => problem.startsWith("AUTH_JWKS_URL="));
  if (url !== undefined && /^https?:\/\//.test(url) && !URL.canParse(url) && !listed) {
    problems.push(`AUTH_JWKS_URL=${shown("AUTH_JWKS_URL", url)}: ${JWKS_URL_EXPECTED}`);
  }
  return problems;
}

/** What is wrong with the RECEIPT_* settings taken together: one source of keys, and keys to name. */
function receiptProblems(raw: Record<string, string>): string[] {
  const problems: string[] = [];
  if (raw.RECEIPT_KEYS && raw.RECEIPT_KEYS_FILE)
    problems.push("RECEIPT_KEYS and RECEIPT_KEYS_FILE: set one of them, not both");
  if (raw.RECEIPT_SIGNING_KEY && !raw.RECEIPT_KEYS && !raw.RECEIPT_KEYS_FILE)
    problems.push(
      `RECEIPT_SIGNING_KEY=${shown("RECEIPT_SIGNING_KEY", raw.RECEIPT_SIGNING_KEY)}: names a key, but neither RECEIPT_KEYS nor RECEIPT_KEYS_FILE is set`,
    );
  return problems;
}

/** Reads and validates the configuration; throws one Error listing every invalid variable. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const raw: Record<string, string> = {};
  const candidate: Record<string, unknown> = {};
  for (const [key, schema] of Object.entries(ConfigSchema.properties)) {
    const value = env[key];
    if (value === undefined || value === "") continue;
    raw[key] = value;
    // Only plain decimal integers become numbers: "3.5", "1e3" or "10abc" stay strings and fail.
    candidate[key] = schema.type === "integer" && /^[+-]?\d+$/.test(value) ? Number(value) : value;
  }
  Value.Default(ConfigSchema, candidate);
  const problems = [...Value.Errors(ConfigSchema, candidate)].map((e) => {
    const key = e.path.slice(1);
    const expected = e.schema.anyOf
      ? `expected one of ${e.schema.anyOf.map((s: { const: string }) => s.const).join(", ")}`
      : key.endsWith("DATABASE_URL")
        ? URL_EXPECTED
        : e.schema.pattern === DURATION_PATTERN
          ? "expected a duration: a whole number with ms, s, m, h or d (24h, 90s)"
          : key === "AUTH_ADMIN_SCOPE"
            ? SCOPE_EXPECTED
            : key === "AUTH_JWKS_URL"
              ? JWKS_URL_EXPECTED
              : e.message;
    return `${key}=${shown(key, raw[key])}: ${expected}`;
  });
  for (const key of ["DATABASE_URL", "LISTEN_DATABASE_URL", "MIGRATION_DATABASE_URL"] as const) {
    const listed = problems.some((problem) => problem.startsWith(`${key}=`));
    const url = candidate[key];
    if (!listed && typeof url === "string" && !parsesAsUrl(url)) {
      problems.push(`${key}=${shown(key, raw[key])}: ${URL_EXPECTED}`);
    }
  }
  problems.push(...receiptProblems(raw), ...authProblems(candidate, raw));
  if (problems.length > 0) throw invalidConfiguration(problems);
  return candidate as Config;
}
