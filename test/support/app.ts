// Builds the real app on a test database, either in-process (app.handle) or listening on a free port.
import { afterAll, beforeAll } from "bun:test";
import { createApp } from "../../src/app";
import { durationMs, loadConfig } from "../../src/config";
import { type ClaimerOptions, createClaimer } from "../../src/engine/claimer";
import type { ReceiptSigner } from "../../src/identity/receipts";
import type { TokenVerifier } from "../../src/identity/tokens";
import { createLogger, type Logger, type RequestLogMode } from "../../src/log";
import { createMetrics } from "../../src/metrics/metrics";
import type { Database } from "../../src/store/database";
import { createReadSlots, type ReadSlots } from "../../src/store/read-slots";
import type { Tracing } from "../../src/tracing/tracing";
import { testFeed } from "./feed";
import { type Client, client } from "./http";

export interface TestAppOptions extends Partial<Omit<ClaimerOptions, "tracing">> {
  adminToken?: string;
  isDraining?: () => boolean;
  isClosing?: () => boolean;
  bodyBytesInFlightMax?: number;
  readSlots?: ReadSlots;
  log?: Logger;
  idempotencyTtlMs?: number;
  tracing?: Tracing;
  logRequests?: RequestLogMode;
  receipts?: ReceiptSigner;
  /** Bearer JWTs (AUTH_*): test/support/issuer.ts makes a verifier of its tokens. */
  tokens?: TokenVerifier;
}

/** The settings as main.ts reads them, from an empty environment: every default as ConfigSchema gives it. */
export const defaults = loadConfig({});

/** The app as main.ts wires it, with ConfigSchema's defaults, no refusal delay and silent logs. */
export function buildApp(db: Database, options: TestAppOptions = {}) {
  const log = options.log ?? createLogger("silent");
  const feed = options.feed ?? testFeed();
  const claimer = createClaimer(db, {
    batchMax: defaults.CLAIM_BATCH_MAX,
    queueMax: defaults.CLAIM_QUEUE_MAX,
    pendingMax: defaults.PENDING_MAX,
    timeoutMs: defaults.REQUEST_TIMEOUT_MS,
    soldOutCacheMax: defaults.SOLD_OUT_CACHE_MAX,
    soldOutCacheBytes: defaults.SOLD_OUT_CACHE_BYTES,
    refusalDelayMs: 0,
    scheduleMarginMs: defaults.SCHEDULE_MARGIN_MS,
    log,
    ...options,
    feed,
  });
  const metrics = createMetrics({ claims: claimer.stats, queue: claimer, feed });
  // Loaded now, as main.ts does shortly after its start: a test's first scrape then never stalls the
  // app (and its change feed's lease) while prom-client's modules are evaluated.
  void metrics.load();
  const app = createApp({
    db,
    log,
    metrics,
    claimer,
    config: {
      ...defaults,
      ADMIN_TOKEN: options.adminToken,
      REQUEST_TIMEOUT_MS: options.timeoutMs ?? defaults.REQUEST_TIMEOUT_MS,
      BODY_BYTES_IN_FLIGHT_MAX: options.bodyBytesInFlightMax ?? defaults.BODY_BYTES_IN_FLIGHT_MAX,
      LOG_REQUESTS: options.logRequests ?? defaults.LOG_REQUESTS,
    },
    isDraining: options.isDraining,
    isClosing: options.isClosing,
    idempotencyTtlMs: options.idempotencyTtlMs ?? durationMs(defaults.IDEMPOTENCY_TTL),
    readSlots: options.readSlots ?? createReadSlots(defaults.COUPON_READ_STREAMS_MAX),
    tracing: options.tracing,
    receipts: options.receipts,
    tokens: options.tokens,
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
