// The only file with side effects: config -> database -> migrate -> app.listen -> graceful shutdown.
// `coupon-service healthcheck` instead probes /health/ready (distroless images have no curl); --help
// and --version print and exit before anything reads the environment or touches a database.
import { createApp } from "./app";
import { parseArgs, usage, VERSION } from "./cli";
import { ConfigSchema, durationMs, loadConfig } from "./config";
import { createClaimer } from "./engine/claimer";
import { checkReadiness } from "./healthcheck";
import { configuredReceiptKeys, embeddedReceiptKeys, generateReceiptKeys } from "./identity/receipt-keys";
import { createReceiptSigner } from "./identity/receipts";
import { tokenVerifierFrom } from "./identity/tokens";
import { createLogger } from "./log";
import { createMetrics } from "./metrics/metrics";
import { describeStartupFailure } from "./startup";
import { openDatabase } from "./store/client";
import { startCollector } from "./store/collector";
import { startKeyCleanup } from "./store/keys";
import { createReadSlots } from "./store/read-slots";
import { describeTimeouts } from "./store/timeouts";
import { createTracing, serviceName } from "./tracing/tracing";

// How long after it listens the service loads its metrics registry (or at the first scrape, if sooner).
const METRICS_LOAD_DELAY_MS = 1000;
// Past the shutdown deadline, the forced close of connections and of the pool gets this long.
const EXIT_SLACK_MS = 200;

/** Exits 0 when GET /health/ready on the configured port answers 200, else 1 with the reason on stderr. */
async function healthcheck(): Promise<never> {
  const reason = await checkReadiness(loadConfig().PORT);
  if (reason) process.stderr.write(`${reason}\n`);
  process.exit(reason ? 1 : 0);
}

async function serve(): Promise<void> {
  const config = loadConfig();
  const log = createLogger(config.LOG_LEVEL);
  // Before the database: a bad OTEL_* setting fails the start like a bad variable of the service's own.
  const tracing = await createTracing(process.env);
  if (tracing.enabled) log.info("tracing on: OTLP/HTTP", { service_name: serviceName(process.env) });
  // Before the database too: a broken AUTH_JWKS_FILE fails the start; a URL's keys are fetched meanwhile.
  const tokens = await tokenVerifierFrom(config, log);
  if (tokens) {
    void tokens.keys.warm();
    log.info("claims need a bearer JWT", {
      issuer: config.AUTH_ISSUER,
      audience: config.AUTH_AUDIENCE,
      keys: config.AUTH_JWKS_FILE ? "AUTH_JWKS_FILE" : "AUTH_JWKS_URL",
      admin_scope: config.AUTH_ADMIN_SCOPE,
    });
    if (!config.ADMIN_TOKEN && !config.AUTH_ADMIN_SCOPE)
      log.warn("creating, changing and releasing coupons are open: set ADMIN_TOKEN or AUTH_ADMIN_SCOPE");
  }

  // Before the database: a malformed key set fails the start like a bad setting, touching nothing.
  const configuredKeys = await configuredReceiptKeys(config);
  const database = await openDatabase(config);
  if (database.kind === "pglite") {
    // A process-wide policy, so here and not in the store: full collections as the process grows
    // (store/collector.ts says why embedded mode needs them).
    startCollector();
    log.warn("embedded database mode: PGlite in this process, single instance only", {
      data_dir: config.DATA_DIR,
      hint: "set DATABASE_URL=postgres://user:pass@host:5432/db to use PostgreSQL and run several replicas",
    });
  }
  // Embedded mode's own key once DATA_DIR is this process's, so two processes never make two.
  const receiptKeys =
    configuredKeys ?? (database.kind === "pglite" ? await embeddedReceiptKeys(config.DATA_DIR) : undefined);
  const receipts =
    receiptKeys &&
    createReceiptSigner(receiptKeys, {
      issuer: config.RECEIPT_ISSUER,
      ...(config.RECEIPT_TTL ? { ttlMs: durationMs(config.RECEIPT_TTL) } : {}),
    });
  if (receiptKeys) {
    log.info("claim receipts signed", { kid: receiptKeys.signing.kid, keys_published: receiptKeys.published.length });
  }
  // The steps that wait on the database go out together (each on a connection of its own; every
  // statement waits for the timeouts' reading first, timeouts.ts), and the app is built while they
  // wait: start-up costs the slowest of them, not their sum. Their results are taken in this order,
  // so the log reads as before and the first failure is the one reported.
  const lockCheckStart = performance.now();
  const steps = {
    // How the server-side timeouts reach the pool's statements.
    timeouts: database.timeouts(),
    migrated: database.migrate(),
    lockChecked: database.checkLock().then(() => Math.round(performance.now() - lockCheckStart)),
    feed: database.listen({ log, leaseMs: config.MEMORY_LEASE_MS }),
  };
  // Awaited below one by one: a step failing while an earlier one is awaited is not unhandled.
  for (const step of Object.values(steps)) step.catch(() => {});
  const feed = await steps.feed;
  let draining = false;
  let closing = false;
  const claimer = createClaimer(database.db, {
    feed,
    scheduleMarginMs: config.SCHEDULE_MARGIN_MS,
    batchMax: config.CLAIM_BATCH_MAX,
    queueMax: config.CLAIM_QUEUE_MAX,
    pendingMax: config.PENDING_MAX,
    timeoutMs: config.REQUEST_TIMEOUT_MS,
    soldOutCacheMax: config.SOLD_OUT_CACHE_MAX,
    soldOutCacheBytes: config.SOLD_OUT_CACHE_BYTES,
    refusalDelayMs: config.OVERLOAD_REFUSAL_DELAY_MS,
    log,
    tracing,
    gatherTurn: database.kind === "pglite",
  });
  const metrics = createMetrics({ claims: claimer.stats, queue: claimer, feed });
  const app = createApp({
    db: database.db,
    log,
    metrics,
    claimer,
    config,
    isDraining: () => draining,
    isClosing: () => closing,
    idempotencyTtlMs: durationMs(config.IDEMPOTENCY_TTL),
    readSlots: createReadSlots(config.COUPON_READ_STREAMS_MAX),
    tracing,
    receipts,
    tokens,
  });
  const timeouts = await steps.timeouts;
  if (timeouts) {
    const line = describeTimeouts(timeouts);
    log[line.level](line.msg, line.fields);
  }
  await steps.migrated;
  log.info("migrations applied", { database: database.kind });
  log.info("advisory lock self-test passed", { duration_ms: await steps.lockChecked });
  app.listen({
    hostname: config.HOST,
    port: config.PORT,
    // Elysia defaults to SO_REUSEPORT, which lets a second instance silently share the port (and, in
    // embedded mode, the data folder). A taken port must fail start-up instead.
    reusePort: false,
  });
  // Every replica sweeps (SKIP LOCKED lets them share the work); expired keys are ignored meanwhile.
  const stopKeyCleanup = startKeyCleanup(database.db, { intervalMs: config.IDEMPOTENCY_SWEEP_MS, log });
  const server = app.server;
  if (!server) throw new Error("the HTTP server did not start");
  log.info("listening", { host: config.HOST, port: server.port, database: database.kind });
  // The metrics registry (prom-client, 10 ms of module evaluation) a second after the start, so the
  // first answers do not wait for it; a scrape before then loads it at once.
  setTimeout(() => void metrics.load(), METRICS_LOAD_DELAY_MS);

  const shutdown = async (signal: string) => {
    if (draining) return;
    draining = true; // readiness answers 503 from now on, so load balancers stop sending
    // One deadline for the whole shutdown, set on the signal. On a starved event loop every timer fires
    // late; steps that each started their own period would add those delays up, so they share this one,
    // and a last timer exits at it (plus EXIT_SLACK_MS for the forced close below) whatever still runs.
    const deadline = performance.now() + config.SHUTDOWN_DELAY_MS + config.SHUTDOWN_GRACE_MS;
    const left = () => Math.max(0, deadline - performance.now());
    setTimeout(() => {
      log.warn("shutdown deadline passed; exiting with work still open", { signal });
      process.exit(0);
    }, left() + EXIT_SLACK_MS);
    log.info("shutting down: draining in-flight requests", {
      signal,
      delay_ms: config.SHUTDOWN_DELAY_MS,
      grace_ms: config.SHUTDOWN_GRACE_MS,
    });
    // Optionally keep accepting for a moment, for balancers that only learn from readiness polls.
    await Bun.sleep(config.SHUTDOWN_DELAY_MS);
    // stop(false): stop accepting, let in-flight requests finish and be answered (with Connection: close).
    closing = true;
    const finished = Promise.all([server.stop(false), claimer.drain()]).then(() => "drained" as const);
    if ((await Promise.race([finished, Bun.sleep(left()).then(() => "timeout" as const)])) === "timeout") {
      log.warn("grace period over; closing remaining connections");
      await server.stop(true);
    }
    stopKeyCleanup();
    await Promise.race([tracing.shutdown().catch(() => {}), Bun.sleep(Math.min(left(), 2000))]);
    await feed.close();
    await database.close(left());
    log.info("stopped", { signal });
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));
}

/** Runs what the command line asks for; start-up failures are logged with their cause and a hint. */
async function main(): Promise<void> {
  const action = parseArgs(process.argv.slice(2));
  switch (action.kind) {
    case "help":
      process.stdout.write(usage(ConfigSchema));
      return;
    case "version":
      process.stdout.write(`${VERSION}\n`);
      return;
    case "usage-error":
      process.stderr.write(`coupon-service: ${action.message}\n\n${usage(ConfigSchema)}`);
      process.exit(2);
      break;
    case "healthcheck":
      return healthcheck();
    case "receipt-key":
      process.stdout.write(generateReceiptKeys());
      return;
    case "serve":
      return serve();
  }
}

main().catch((error) => {
  const log = createLogger("error");
  if (error instanceof Error && error.message.startsWith("Invalid configuration")) log.error(error.message);
  else {
    const failure = describeStartupFailure(error);
    log.error(failure.msg, failure.fields);
  }
  process.exit(1);
});
