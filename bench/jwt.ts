// The identity provider of the row "hot coupon, bearer JWT on every claim" (bench/run.ts): one RS256 key
// (what most providers sign with), its JWK Set served by this process, and a token for every user
// claim.lua names ("t<thread>-<n>"), minted before the run: one file per wrk thread, each minted by a
// process of its own (an RSA signature costs about half a millisecond), kept in the temp folder with
// the key for the next run while they have days left.
//   bun bench/jwt.ts mint <key.pem> <thread> <count> <file>   mints one thread's file (run.ts does it)
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const BENCH_ISSUER = "https://issuer.bench.coupon-service.test/";
export const BENCH_AUDIENCE = "coupon-service";
const KID = "bench";
/** Tokens live a week; a cached set is minted again once it has less than a day left. */
const LIFETIME_S = 7 * 86_400;
const MIN_LEFT_S = 86_400;
const FOLDER = join(tmpdir(), "coupon-bench-jwt");

export interface BenchIssuer {
  /** The service's AUTH_* settings for this issuer. */
  settings: Record<string, string>;
  /** claim.lua's argument: its thread n reads `<prefix>-t<n>.txt`, line i the token of user t<n>-<i>. */
  tokensArg: string;
  /** JWK Set requests the service made. */
  readonly fetches: number;
  stop(): void;
}

const base64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");

/** `count` tokens of users t<thread>-1 .. t<thread>-<count>, signed by `keyPem`, one per line, into `file`. */
function mint(keyPem: string, thread: number, count: number, file: string): void {
  const key = createPrivateKey(keyPem);
  const header = base64url({ alg: "RS256", typ: "JWT", kid: KID });
  const iat = Math.floor(Date.now() / 1000);
  const lines: string[] = [];
  for (let n = 1; n <= count; n++) {
    const payload = base64url({
      iss: BENCH_ISSUER,
      aud: BENCH_AUDIENCE,
      sub: `t${thread}-${n}`,
      iat,
      exp: iat + LIFETIME_S,
    });
    const signature = sign("sha256", Buffer.from(`${header}.${payload}`), key).toString("base64url");
    lines.push(`${header}.${payload}.${signature}`);
  }
  writeFileSync(file, `${lines.join("\n")}\n`);
}

/** The key of the cached tokens (made once), as PKCS#8 PEM. */
function benchKey(): string {
  const file = join(FOLDER, "key.pem");
  if (!existsSync(file)) {
    const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    writeFileSync(file, privateKey.export({ type: "pkcs8", format: "pem" }));
  }
  return readFileSync(file, "utf8");
}

/**
 * Serves the bench key's JWK Set and makes sure `perThread` tokens per wrk thread are minted (reusing
 * the temp folder's while they have a day left); `log` says what it is doing.
 */
export async function startBenchIssuer(perThread: number, threads: number, log: (line: string) => void) {
  mkdirSync(FOLDER, { recursive: true });
  const keyPem = benchKey();
  const prefix = join(FOLDER, `tokens-${perThread}`);
  const stamp = join(FOLDER, `tokens-${perThread}.minted`);
  const mintedAt = existsSync(stamp) ? Number(readFileSync(stamp, "utf8")) : 0;
  if (Date.now() / 1000 - mintedAt > LIFETIME_S - MIN_LEFT_S) {
    log(
      `  minting ${perThread.toLocaleString("en-US")} RS256 tokens for each of ${threads} wrk threads (kept in ${FOLDER})`,
    );
    const started = performance.now();
    const minters = Array.from({ length: threads }, (_, i) =>
      Bun.spawn(
        [
          process.execPath,
          import.meta.path,
          "mint",
          join(FOLDER, "key.pem"),
          String(i + 1),
          String(perThread),
          `${prefix}-t${i + 1}.txt`,
        ],
        {
          stdout: "inherit",
          stderr: "inherit",
        },
      ),
    );
    const codes = await Promise.all(minters.map((minter) => minter.exited));
    if (codes.some((code) => code !== 0)) throw new Error(`minting tokens failed (exit codes ${codes.join(", ")})`);
    writeFileSync(stamp, String(Math.floor(Date.now() / 1000)));
    log(`  minted in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  }
  const jwk = { ...createPublicKey(keyPem).export({ format: "jwk" }), kid: KID, alg: "RS256", use: "sig" };
  let fetches = 0;
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch() {
      fetches++;
      return Response.json({ keys: [jwk] });
    },
  });
  const issuer: BenchIssuer = {
    settings: {
      AUTH_ISSUER: BENCH_ISSUER,
      AUTH_AUDIENCE: BENCH_AUDIENCE,
      AUTH_JWKS_URL: `http://127.0.0.1:${server.port}/jwks.json`,
    },
    tokensArg: `tokens=${prefix}`,
    get fetches() {
      return fetches;
    },
    stop: () => void server.stop(true),
  };
  return issuer;
}

if (import.meta.main && process.argv[2] === "mint") {
  const [keyFile, thread, count, file] = process.argv.slice(3) as [string, string, string, string];
  mint(readFileSync(keyFile, "utf8"), Number(thread), Number(count), file);
}
