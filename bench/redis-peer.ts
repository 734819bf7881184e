// A BENCHMARK PEER, NOT A FEATURE: the design people reach for in flash sales, measured beside this
// service by `bun run bench`. A stateless HTTP layer (a bare Bun.serve, the same runtime) over Redis,
// one Lua script per claim (holder check, stock check, add holder, decrement), answering the routes the
// benchmark uses exactly as the service does (test/bench/redis-peer.test.ts compares them). Its promise
// is weaker: Redis acknowledges a claim before any disk has it (appendfsync everysec, at best, can lose
// the last second of acknowledged claims), where the service answers 201 only after PostgreSQL commits.
// Run alone: `REDIS_URL=redis://127.0.0.1:6379 PORT=3100 bun bench/redis-peer.ts`.
import { RedisClient } from "bun";

// KEYS: the coupon's stock, its holders. ARGV: the user. Atomic: Redis runs one script at a time. A win
// answers its seq, the number of holders with it (the peer has no release, so no number is reused).
const CLAIM = `
local stock = redis.call('GET', KEYS[1])
if not stock then return 'not_found' end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return 'already_claimed' end
if tonumber(stock) <= 0 then return 'sold_out' end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('DECR', KEYS[1])
return redis.call('SCARD', KEYS[2])`;

// KEYS: the coupon's stock. ARGV: the amount.
const CREATE = `if redis.call('SET', KEYS[1], ARGV[1], 'NX') then return 'created' end return 'exists'`;

/** The problem answers the benchmark's scenarios can get, as the service renders them. */
const problems = {
  already_claimed: [
    409,
    "ALREADY_CLAIMED",
    "Coupon already claimed by this user",
    "This user already holds this coupon.",
  ],
  sold_out: [409, "SOLD_OUT", "Coupon sold out", "No stock left."],
  not_found: [404, "COUPON_NOT_FOUND", "Coupon not found", "No such coupon."],
  exists: [409, "COUPON_EXISTS", "Coupon already exists", ""],
  invalid: [400, "VALIDATION_FAILED", "Request validation failed", "body: invalid"],
} as const;

function problem(kind: keyof typeof problems, instance: string, id: string, detail?: string): Response {
  const [status, code, title, fixed] = problems[kind];
  const type = `https://coupon-service.dev/problems/${code.toLowerCase().replaceAll("_", "-")}`;
  const body = { type, title, status, detail: detail ?? fixed, code, instance, request_id: id };
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/problem+json", "x-request-id": id },
  });
}

function json(body: unknown, status: number, id: string, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json;charset=utf-8", "x-request-id": id, ...headers },
  });
}

const text = (value: unknown): value is string => typeof value === "string" && value.length > 0;

export interface RedisPeer {
  baseUrl: string;
  port: number;
  stop(): Promise<void>;
}

/** Starts the peer on 127.0.0.1:`port` (0: any free port) over the Redis at `redisUrl`; keys under `prefix`. */
export async function startRedisPeer(redisUrl: string, port = 0, prefix = "peer"): Promise<RedisPeer> {
  const redis = new RedisClient(redisUrl);
  const claimSha = String(await redis.send("SCRIPT", ["LOAD", CLAIM]));
  const createSha = String(await redis.send("SCRIPT", ["LOAD", CREATE]));
  const stock = (coupon: string) => `${prefix}:{${coupon}}:stock`;
  const holders = (coupon: string) => `${prefix}:{${coupon}}:holders`;
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port,
    routes: {
      // The trivial route: the HTTP ceiling of a bare Bun.serve on this machine.
      "/health/live": () => json({ status: "ok" }, 200, crypto.randomUUID()),
      "/api/coupons": {
        async POST(request) {
          const id = crypto.randomUUID();
          const body = (await request.json().catch(() => null)) as { name?: unknown; amount?: unknown } | null;
          if (!body || !text(body.name) || !Number.isInteger(body.amount) || (body.amount as number) < 1)
            return problem("invalid", "/api/coupons", id);
          const outcome = await redis.send("EVALSHA", [createSha, "1", stock(body.name), String(body.amount)]);
          if (outcome !== "created")
            return problem("exists", "/api/coupons", id, `A coupon named ${JSON.stringify(body.name)} already exists.`);
          const coupon = { name: body.name, amount: body.amount, remaining_amount: body.amount };
          return json(coupon, 201, id, { location: `/api/coupons/${encodeURIComponent(body.name)}` });
        },
      },
      "/api/coupons/claim": {
        async POST(request) {
          const id = crypto.randomUUID();
          const body = (await request.json().catch(() => null)) as { user_id?: unknown; coupon_name?: unknown } | null;
          if (!body || !text(body.user_id) || !text(body.coupon_name))
            return problem("invalid", "/api/coupons/claim", id);
          const coupon = body.coupon_name;
          const outcome = await redis.send("EVALSHA", [claimSha, "2", stock(coupon), holders(coupon), body.user_id]);
          if (typeof outcome !== "number") return problem(outcome as keyof typeof problems, "/api/coupons/claim", id);
          const claimed = {
            user_id: body.user_id,
            coupon_name: coupon,
            claimed_at: new Date().toISOString(),
            seq: outcome,
          };
          return json(claimed, 201, id);
        },
      },
    },
    fetch: () => new Response("Not Found", { status: 404 }),
  });
  return {
    baseUrl: `http://127.0.0.1:${server.port}`,
    port: server.port as number,
    async stop() {
      await server.stop(true);
      redis.close();
    },
  };
}

if (import.meta.main) {
  const peer = await startRedisPeer(
    process.env.REDIS_URL || "redis://127.0.0.1:6379",
    Number(process.env.PORT || 3100),
    process.env.PEER_PREFIX || "peer",
  );
  console.log(`redis peer listening on ${peer.baseUrl}`);
  const stop = () => void peer.stop().then(() => process.exit(0));
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}
