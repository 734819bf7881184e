// Builds the HTTP application: request ids and logs, error mapping, docs, metrics and routes.
// It never listens and never reads the environment; main.ts does that.
import { Elysia } from "elysia";
import type { Config } from "./config";
import type { Claimer } from "./domain/claim";
import { fail, failures } from "./domain/errors";
import { jwtSchemes } from "./http/auth-docs";
import { createBodyBudget, readJsonBody } from "./http/body";
import { couponRoutes } from "./http/coupons";
import { docs } from "./http/docs";
import { healthRoutes } from "./http/health";
import { jwksRoute } from "./http/jwks";
import { errorResponse, mapError } from "./http/problems";
import { checkPercentEncoding, isOriginlessFallback, requestPath, withOrigin } from "./http/request";
import type { ReceiptSigner } from "./identity/receipts";
import type { TokenVerifier } from "./identity/tokens";
import { errorFields, type Logger, requestLogLevel } from "./log";
import type { Metrics } from "./metrics/metrics";
import type { Database } from "./store/database";
import type { ReadSlots } from "./store/read-slots";
import { noTracing, type RequestTrace, type Tracing } from "./tracing/tracing";

export interface AppDeps {
  db: Database;
  log: Logger;
  metrics: Metrics;
  claimer: Claimer;
  /**
   * The settings the HTTP side reads, by their names: ADMIN_TOKEN, REQUEST_TIMEOUT_MS,
   * BODY_BYTES_IN_FLIGHT_MAX, COUPON_READ_PAGE_SIZE, LOG_REQUESTS (loadConfig gives their defaults).
   */
  config: Pick<
    Config,
    "ADMIN_TOKEN" | "REQUEST_TIMEOUT_MS" | "BODY_BYTES_IN_FLIGHT_MAX" | "COUPON_READ_PAGE_SIZE" | "LOG_REQUESTS"
  >;
  /** IDEMPOTENCY_TTL in milliseconds. */
  idempotencyTtlMs: number;
  /** The bound on big coupon reads streamed at once (COUPON_READ_STREAMS_MAX), shared with main.ts. */
  readSlots: ReadSlots;
  isDraining?: () => boolean;
  /** True once the server stops accepting (shutdown, after SHUTDOWN_DELAY_MS): answers close their connection. */
  isClosing?: () => boolean;
  /** OpenTelemetry traces (tracing/tracing.ts); off without one. */
  tracing?: Tracing;
  /** Signs claim receipts (identity/receipts.ts); unset, claims carry none and the published key set is empty. */
  receipts?: ReceiptSigner;
  /** Bearer JWTs from the AUTH_* settings (identity/tokens.ts); without them claims need no token. */
  tokens?: TokenVerifier;
}

interface RequestState {
  id: string;
  start: number;
  /** The path as sent; Elysia's own `path` is sliced from a fixed offset, wrong without a usable Host. */
  path: string;
  /** The status onError answered with; Elysia's own view of it (422, 200 for 404s) is pre-mapping. */
  errorStatus?: number;
  /** The request's server span, when tracing is on. */
  trace?: RequestTrace;
}

// An incoming X-Request-Id is honoured only if it is short and printable, so it is safe to log and echo.
const REQUEST_ID = /^[\x21-\x7e]{1,128}$/;

/** Creates the application; `app.handle(request)` serves a request, `app.listen()` is the caller's. */
export function createApp(deps: AppDeps) {
  const { log, metrics, config } = deps;
  const requestTimeoutMs = config.REQUEST_TIMEOUT_MS;
  const isDraining = deps.isDraining ?? (() => false);
  const isClosing = deps.isClosing ?? (() => false);
  const logRequests = config.LOG_REQUESTS;
  const bodyBudget = createBodyBudget(config.BODY_BYTES_IN_FLIGHT_MAX);
  const requests = new WeakMap<Request, RequestState>();
  const tracing = deps.tracing ?? noTracing;
  const serveWithOrigin = (request: Request): Promise<Response> => app.handle(withOrigin(request));
  // Once the server stops accepting, each answer closes its connection (Bun closes it after writing), so
  // keep-alive clients go elsewhere instead of sending into a socket that is about to close. Not earlier:
  // during SHUTDOWN_DELAY_MS, clients reconnecting after every answer starve Bun's timers (the shutdown
  // deadline fired 4 to 37 s late under a 1,000-connection flood, bench/shutdown-flood.ts).
  const closeIfStopping = (set: { headers: Record<string, unknown> }) => {
    if (isClosing()) set.headers.connection = "close";
  };

  // Every hook below is total: whatever arrives, it neither throws past Elysia nor skips the log line
  // (onAfterResponse runs outside any request, where a throw would end the process).
  const app = new Elysia({
    // Elysia looks for the path from a fixed offset in the URL; its default (11) assumes a host of 4+
    // characters, so "http://ab/x/health/live" would be routed as /health/live. 7 suits any http:// URL.
    handler: { standardHostname: false },
    serve: {
      // Bun's last resort if anything escapes Elysia; without it Bun answers its development error
      // page, an HTML document with the stack and source lines.
      error(error) {
        log.error("unhandled error outside the app", errorFields(error));
        return errorResponse(fail(failures.internal));
      },
    },
  })
    .onRequest(({ request, set }) => {
      if (isOriginlessFallback(request)) return serveWithOrigin(request);
      const incoming = request.headers.get("x-request-id");
      const id = incoming && REQUEST_ID.test(incoming) ? incoming : crypto.randomUUID();
      const path = requestPath(request.url);
      const trace = tracing.enabled ? tracing.startRequest(request.method, path, request.headers) : undefined;
      requests.set(request, { id, start: performance.now(), path, trace });
      set.headers["x-request-id"] = id;
      checkPercentEncoding(path);
    })
    // Only POST and PATCH take a body; a DELETE's (an empty JSON body some clients send) is never read.
    .onParse(({ request }) => (request.method === "DELETE" ? {} : readJsonBody(request, bodyBudget)))
    // Decided when the answer is made, so requests in flight when the server stops accepting get it too.
    .onAfterHandle(({ set }) => closeIfStopping(set))
    .onError(({ code, error, request, set }) => {
      closeIfStopping(set);
      const state = requests.get(request);
      const path = state?.path ?? requestPath(request.url);
      const appError = mapError(log, code, error, {
        request_id: state?.id,
        method: request.method,
        path,
        ...(state?.trace ? { trace_id: state.trace.traceId } : {}),
      });
      const response = errorResponse(appError, path, state?.id);
      if (state) state.errorStatus = response.status;
      return response;
    })
    .onAfterResponse(({ request, route, set }) => {
      const state = requests.get(request);
      if (!state) return;
      try {
        // Routes that return a ready Response set set.status too; errors were recorded by onError.
        const status = state.errorStatus ?? Number(set.status ?? 200);
        const seconds = (performance.now() - state.start) / 1000;
        const label = route || "unmatched"; // unknown paths share one label: no unbounded cardinality
        metrics.requestDurations.observe(request.method, label, status, seconds);
        if (state.trace) tracing.endRequest(state.trace, label, status);
        const level = requestLogLevel(logRequests, state.path, status);
        if (!level) return;
        log[level]("request", {
          request_id: state.id,
          method: request.method,
          route: label,
          path: state.path,
          status,
          duration_ms: Math.round(seconds * 100_000) / 100,
          ...(state.trace ? { trace_id: state.trace.traceId } : {}),
        });
      } catch (failure) {
        log.error("request log failed", { request_id: state.id, ...errorFields(failure) });
      }
    })
    .use(docs(jwtSchemes(deps.tokens)))
    .use(
      couponRoutes({
        db: deps.db,
        claimer: deps.claimer,
        metrics,
        log,
        adminToken: config.ADMIN_TOKEN,
        tokens: deps.tokens,
        requestTimeoutMs,
        idempotencyTtlMs: deps.idempotencyTtlMs,
        // Sampled requests only: an unsampled one costs its queue and batch no span at all.
        traceOf: (request) => {
          const trace = requests.get(request)?.trace;
          return trace?.span.isRecording() ? trace : undefined;
        },
        readSlots: deps.readSlots,
        readPageSize: config.COUPON_READ_PAGE_SIZE,
        receipts: deps.receipts,
      }),
    )
    .use(jwksRoute(deps.receipts))
    .use(
      healthRoutes({
        db: deps.db,
        isDraining,
        probeTimeoutMs: Math.min(2000, requestTimeoutMs),
      }),
    )
    .get("/metrics", async () => {
      const { body, contentType } = await metrics.scrape();
      return new Response(body, { headers: { "content-type": contentType } });
    });
  return app;
}

export type App = ReturnType<typeof createApp>;
