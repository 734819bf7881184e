// The Redis+Lua benchmark peer (bench/redis-peer.ts) stays a fair peer: on the benchmark's scenarios
// (create, a hot coupon, a sold-out flood, the trivial route) it gives the answers the service gives.
// Needs a Redis at TEST_REDIS_URL (default redis://127.0.0.1:6379); skipped without one, except in CI.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { RedisClient } from "bun";
import { type RedisPeer, startRedisPeer } from "../../bench/redis-peer";
import { buildApp, listen } from "../support/app";
import { databaseForSuite } from "../support/database";

const REDIS_URL = process.env.TEST_REDIS_URL || "redis://127.0.0.1:6379";

/** True when a Redis answers PING at REDIS_URL within a second. */
async function redisAnswers(): Promise<boolean> {
  const redis = new RedisClient(REDIS_URL, { connectionTimeout: 1000, autoReconnect: false });
  try {
    return (await redis.send("PING", [])) === "PONG";
  } catch {
    return false;
  } finally {
    redis.close();
  }
}

const available = await redisAnswers();
if (!available && process.env.CI === "true")
  throw new Error(`no Redis at ${REDIS_URL}: .ci/run installs and starts redis-server for this test`);

/** An answer as the two are compared: status, content type and body, with the per-request values masked. */
async function answer(response: Response) {
  const body = (await response.json()) as Record<string, unknown>;
  for (const key of ["claimed_at", "request_id"]) if (key in body) body[key] = `<${key}>`;
  return {
    status: response.status,
    type: response.headers.get("content-type"),
    requestId: /^[0-9a-f-]{36}$/.test(response.headers.get("x-request-id") ?? ""),
    body,
  };
}

const post = async (base: string, path: string, body: unknown) =>
  answer(
    await fetch(`${base}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    }),
  );

describe.skipIf(!available)("the Redis+Lua benchmark peer", () => {
  const database = databaseForSuite();
  const prefix = `peer-test-${crypto.randomUUID()}`;
  let peer: RedisPeer;
  let service: { baseUrl: string; stop: () => Promise<void> };
  beforeAll(async () => {
    peer = await startRedisPeer(REDIS_URL, 0, prefix);
    service = listen(buildApp(database.handle.db).app);
  });
  afterAll(async () => {
    await Promise.all([peer?.stop(), service?.stop()]);
    const redis = new RedisClient(REDIS_URL);
    const keys = (await redis.send("KEYS", [`${prefix}:*`])) as string[];
    if (keys.length > 0) await redis.send("DEL", keys);
    redis.close();
  });

  /** The same request to both: [service's answer, peer's answer]. */
  const both = (path: string, body: unknown) =>
    Promise.all([post(service.baseUrl, path, body), post(peer.baseUrl, path, body)]);

  it("creates a coupon with the service's 201, and refuses its name again with the same COUPON_EXISTS", async () => {
    const [created, peerCreated] = await both("/api/coupons", { name: "PEER_CREATE", amount: 3 });
    expect(created.status).toBe(201);
    expect(peerCreated).toEqual(created);
    const [again, peerAgain] = await both("/api/coupons", { name: "PEER_CREATE", amount: 3 });
    expect(again.body.code).toBe("COUPON_EXISTS");
    expect(peerAgain).toEqual(again);
  });

  it("gives a hot coupon's stock to exactly as many users, the rest SOLD_OUT, answered as the service answers", async () => {
    await both("/api/coupons", { name: "PEER_HOT", amount: 5 });
    const users = Array.from({ length: 20 }, (_, i) => `user-${i}`);
    const claim = (base: string) =>
      Promise.all(users.map((user_id) => post(base, "/api/coupons/claim", { user_id, coupon_name: "PEER_HOT" })));
    const [answers, peerAnswers] = await Promise.all([claim(service.baseUrl), claim(peer.baseUrl)]);
    // The winners may differ (arrival order); the answers as a whole may not.
    const tally = (list: Awaited<ReturnType<typeof answer>>[]) =>
      list.map((one) => JSON.stringify({ ...one, body: { ...one.body, user_id: "<user>" } })).sort();
    expect(tally(peerAnswers)).toEqual(tally(answers));
    expect(answers.filter((one) => one.status === 201).length).toBe(5);
    // A winner claiming again is told ALREADY_CLAIMED by both, even on a sold-out coupon.
    const winner = (list: typeof answers) => users[list.findIndex((one) => one.status === 201)] as string;
    const [again, peerAgain] = await Promise.all([
      post(service.baseUrl, "/api/coupons/claim", { user_id: winner(answers), coupon_name: "PEER_HOT" }),
      post(peer.baseUrl, "/api/coupons/claim", { user_id: winner(peerAnswers), coupon_name: "PEER_HOT" }),
    ]);
    expect(again.body.code).toBe("ALREADY_CLAIMED");
    expect(peerAgain).toEqual(again);
  });

  it("answers a sold-out flood's claims and an unknown coupon's as the service does", async () => {
    await both("/api/coupons", { name: "PEER_GONE", amount: 1 });
    await both("/api/coupons/claim", { user_id: "seed", coupon_name: "PEER_GONE" });
    for (const user_id of ["late-1", "late-2"]) {
      const [soldOut, peerSoldOut] = await both("/api/coupons/claim", { user_id, coupon_name: "PEER_GONE" });
      expect(soldOut.body.code).toBe("SOLD_OUT");
      expect(peerSoldOut).toEqual(soldOut);
    }
    const [missing, peerMissing] = await both("/api/coupons/claim", { user_id: "u", coupon_name: "PEER_NONE" });
    expect(missing.status).toBe(404);
    expect(peerMissing).toEqual(missing);
  });

  it("answers the trivial route GET /health/live as the service does", async () => {
    const [live, peerLive] = await Promise.all(
      [service.baseUrl, peer.baseUrl].map(async (base) => answer(await fetch(`${base}/health/live`))),
    );
    expect(live).toEqual({
      status: 200,
      type: "application/json;charset=utf-8",
      requestId: true,
      body: { status: "ok" },
    });
    expect(peerLive).toEqual(live);
  });
});
