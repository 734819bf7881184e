// Builds the HTTP application: request ids and logs, error mapping, docs, metrics and routes.
// It never listens and never reads the environment; main.ts does that.
import { Elysia } from "elysia";
import type { Claimer } from "./coupons/claimer";
import { couponRoutes } from "./coupons/routes";
import type { Database } from "./db/client";
import { isDatabaseUnavailable } from "./db/errors";
import { AppError, errorResponse } from "./errors";
import { healthRoutes } from "./health/routes";
import { readJsonBody } from "./http/body";
import { docs } from "./http/docs";
import { toAppError } from "./http/problems";
import { errorFields, type Logger } from "./log";
import type { Metrics } from "./metrics/metrics";

export interface AppDeps {
  db: Database;
  log: Logger;
  metrics: Metrics;
  claimer: Claimer;
  adminToken?: string;
  isDraining?: () => boolean;
  /** Deadline for requests that wait on the database (default 10 s). */
  requestTimeoutMs?: number;
}

interface RequestState {
  id: string;
  start: number;
  /** The status onError answered with; Elysia's own view of it (422, 200 for 404s) is pre-mapping. */
  errorStatus?: number;
}

// An incoming X-Request-Id is honoured only if it is short and printable, so it is safe to log and echo.
const REQUEST_ID = /^[\x21-\x7e]{1,128}$/;

/** The problem for anything thrown while handling a request; never throws itself. */
function mapError(log: Logger, code: string | number, error: unknown, context: Record<string, unknown>): AppError {
  try {
    const mapped = toAppError(code, error);
    if (mapped) return mapped;
    if (isDatabaseUnavailable(error)) {
      log.warn("database unavailable", { ...context, ...errorFields(error) });
      return new AppError("SERVICE_UNAVAILABLE", "The database is unavailable; retry shortly.", { retryAfter: 1 });
    }
    log.error("unhandled error", { ...context, ...errorFields(error) });
  } catch (mappingFailure) {
    log.error("error mapping failed", { ...context, ...errorFields(mappingFailure) });
  }
  return new AppError("INTERNAL_ERROR", "An unexpected error occurred. It has been logged.");
}

/** Creates the application; `app.handle(request)` serves a request, `app.listen()` is the caller's. */
export function createApp(deps: AppDeps) {
  const { log, metrics } = deps;
  const requestTimeoutMs = deps.requestTimeoutMs ?? 10_000;
  const requests = new WeakMap<Request, RequestState>();

  return new Elysia()
    .onRequest(({ request, set }) => {
      const incoming = request.headers.get("x-request-id");
      const id = incoming && REQUEST_ID.test(incoming) ? incoming : crypto.randomUUID();
      requests.set(request, { id, start: performance.now() });
      set.headers["x-request-id"] = id;
    })
    .onParse(({ request }) => readJsonBody(request))
    .onError(({ code, error, request, path }) => {
      const state = requests.get(request);
      const appError = mapError(log, code, error, { request_id: state?.id, method: request.method, path });
      if (state) state.errorStatus = appError.status;
      return errorResponse(appError, path, state?.id);
    })
    .onAfterResponse(({ request, route, set }) => {
      const state = requests.get(request);
      if (!state) return;
      // Routes that return a ready Response set set.status too; errors were recorded by onError.
      const status = state.errorStatus ?? Number(set.status ?? 200);
      const seconds = (performance.now() - state.start) / 1000;
      const label = route || "unmatched"; // unknown paths share one label: no unbounded cardinality
      metrics.requestDuration.observe({ method: request.method, route: label, status: String(status) }, seconds);
      log.info("request", {
        request_id: state.id,
        method: request.method,
        route: label,
        path: new URL(request.url).pathname,
        status,
        duration_ms: Math.round(seconds * 100_000) / 100,
      });
    })
    .use(docs())
    .use(couponRoutes({ db: deps.db, claimer: deps.claimer, metrics, adminToken: deps.adminToken, requestTimeoutMs }))
    .use(
      healthRoutes({
        db: deps.db,
        isDraining: deps.isDraining ?? (() => false),
        probeTimeoutMs: Math.min(2000, requestTimeoutMs),
      }),
    )
    .get(
      "/metrics",
      async () =>
        new Response(await metrics.registry.metrics(), {
          headers: { "content-type": metrics.registry.contentType },
        }),
    );
}

export type App = ReturnType<typeof createApp>;
