// Builds the real app on a test database, either in-process (app.handle) or listening on a free port.
import { afterAll, beforeAll } from "bun:test";
import { createApp } from "../../src/app";
import { type Claimer, type ClaimerOptions, claimQueue, createClaimer } from "../../src/coupons/claims";
import type { ReadSlots } from "../../src/coupons/read-slots";
import type { Database } from "../../src/db/client";
import { createLogger, type Logger } from "../../src/log";
import { createMetrics } from "../../src/metrics/metrics";
import { testFeed } from "./feed";
import { type Client, client } from "./http";

export interface TestAppOptions extends Partial<ClaimerOptions> {
  adminToken?: string;
  isDraining?: () => boolean;
  isClosing?: () => boolean;
  bodyBytesInFlightMax?: number;
  readSlots?: ReadSlots;
  log?: Logger;
  idempotencyTtlMs?: number;
}

/** The app as main.ts wires it, with test-friendly defaults (silent logs). */
export function buildApp(db: Database, options: TestAppOptions = {}) {
  const log = options.log ?? createLogger("silent");
  const feed = options.feed ?? testFeed();
  const claimer: Claimer = createClaimer(db, {
    batchMax: 256,
    queueMax: 10_000,
    pendingMax: 50_000,
    timeoutMs: 10_000,
    soldOutCacheMax: 100_000,
    soldOutCacheBytes: 128 * 1024 * 1024,
    refusalDelayMs: 0,
    scheduleMarginMs: 1000,
    log,
    ...options,
    feed,
  });
  const metrics = createMetrics({
    claims: claimer.stats,
    queue: claimQueue(claimer, options.pendingMax ?? 50_000),
    feed,
  });
  const app = createApp({
    db,
    log,
    metrics,
    claimer,
    adminToken: options.adminToken,
    isDraining: options.isDraining,
    isClosing: options.isClosing,
    requestTimeoutMs: options.timeoutMs,
    idempotencyTtlMs: options.idempotencyTtlMs,
    bodyBytesInFlightMax: options.bodyBytesInFlightMax,
    readSlots: options.readSlots,
    tracing: options.tracing,
  });
  return { app, claimer, metrics };
}

/** Starts the app on 127.0.0.1 with a free port; returns its base URL and a stop function. */
export function listen(app: ReturnType<typeof buildApp>["app"]) {
  app.listen({ hostname: "127.0.0.1", port: 0 });
  const port = app.server?.port;
  if (!port) throw new Error("app did not start listening");
  return { baseUrl: `http://127.0.0.1:${port}`, stop: async () => void (await app.stop(true)) };
}

/** Serves the app over real HTTP for the enclosing describe block; `api` is ready inside its tests. */
export function serveForSuite(db: () => Database, options: TestAppOptions = {}): { api: Client } {
  const suite = {} as { api: Client };
  let stop: () => Promise<void>;
  beforeAll(() => {
    const server = listen(buildApp(db(), options).app);
    suite.api = client(server.baseUrl);
    stop = server.stop;
  });
  afterAll(() => stop());
  return suite;
}
