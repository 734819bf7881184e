// OpenTelemetry traces, configured only by the standard OTEL_* environment and exported over OTLP/HTTP
// (protobuf or JSON). Off, and free, unless an OTLP endpoint is set: the SDK is not even loaded, and
// the rest of the code asks `enabled` before building anything. Contexts are passed explicitly (a
// request's trace rides on its ClaimRequest), so no context manager runs on the claim path.
import {
  type Attributes,
  type Context,
  INVALID_SPAN_CONTEXT,
  type Link,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type Tracer,
  trace,
} from "@opentelemetry/api";
import { invalidSetting } from "../config";
import type { ClaimTracing, Trace } from "../domain/claim";

/** A request's server span, and the context its children start in: the claim's Trace (domain/claim.ts). */
export interface RequestTrace extends Trace {
  span: Span;
  context: Context;
  traceId: string;
  method: string;
}

/** Traces of requests, and (as the claimer's ClaimTracing) of their queue waits and batches. */
export interface Tracing extends ClaimTracing {
  readonly enabled: boolean;
  /** The server span of an HTTP request, child of its W3C `traceparent` when it has one. */
  startRequest(method: string, path: string, headers: Headers): RequestTrace | undefined;
  /** Ends a request's span with its route and status (5xx marks it an error). */
  endRequest(request: RequestTrace, route: string, status: number): void;
  /** A claim's (or release's) wait in its coupon's queue, until its batch is sent or it is answered. */
  startQueueWait(request: RequestTrace, coupon: string): Span;
  /**
   * Runs one batch's decision inside its spans: the batch (a root, linked to the span of every
   * sampled request it decides, with the batch size) and, as its child, the SQL call. Sampled
   * whenever one of its requests is (sampler.ts).
   */
  traceBatch<T>(coupon: string, requests: readonly (RequestTrace | undefined)[], decide: () => Promise<T>): Promise<T>;
  /** Exports what is buffered and stops. */
  shutdown(): Promise<void>;
}

/** Tracing switched off: what the app uses without an OTLP endpoint, and tests by default. */
export const noTracing: Tracing = {
  enabled: false,
  startRequest: () => undefined,
  endRequest() {},
  // Never asked: requests carry no trace while tracing is off.
  startQueueWait: () => trace.wrapSpanContext(INVALID_SPAN_CONTEXT),
  traceBatch: (_coupon, _requests, decide) => decide(),
  shutdown: async () => {},
};

type Env = Record<string, string | undefined>;

/** Whether the environment asks for traces: an OTLP endpoint, and neither the SDK nor the exporter off. */
export function tracingRequested(env: Env): boolean {
  if (env.OTEL_SDK_DISABLED === "true" || env.OTEL_TRACES_EXPORTER === "none") return false;
  return Boolean(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || env.OTEL_EXPORTER_OTLP_ENDPOINT);
}

/** OTEL_SERVICE_NAME, or the service's own name. */
export const serviceName = (env: Env) => env.OTEL_SERVICE_NAME || "coupon-service";

/** The SQL the batch call sends, by function: the db.query.text of its span (never its parameters). */
const BATCH_SQL = "select * from claim_batch_seq($1, $2) /* or claim_keyed_batch_seq, claim_request_batch_seq */";

/** OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as given, else OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces. */
function tracesUrl(env: Env): string {
  if (env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) return env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
  return `${(env.OTEL_EXPORTER_OTLP_ENDPOINT ?? "").replace(/\/+$/, "")}/v1/traces`;
}

/**
 * The OTLP/HTTP encoding: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL, else
 * http/protobuf (the specification's default). grpc is refused rather than ignored: spans sent as
 * HTTP to a gRPC port would be lost without a word.
 */
export function otlpProtocol(env: Env): "http/protobuf" | "http/json" {
  for (const key of ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"]) {
    const value = env[key];
    if (value === undefined || value === "") continue;
    if (value === "http/protobuf" || value === "http/json") return value;
    throw invalidSetting(
      key,
      value,
      "expected http/protobuf or http/json (OTLP over HTTP, usually port 4318; grpc is not supported)",
    );
  }
  return "http/protobuf";
}

/** OTEL_TRACES_EXPORTER, when tracing is on: otlp is the only exporter (none switches tracing off). */
function checkExporter(env: Env): void {
  const value = env.OTEL_TRACES_EXPORTER;
  if (value === undefined || value === "" || value === "otlp") return;
  throw invalidSetting("OTEL_TRACES_EXPORTER", value, "expected otlp, or none to switch tracing off");
}

/** The standard OTEL_BSP_* settings of the batch span processor, where set (the SDK no longer reads them). */
function batchOptions(env: Env) {
  const read = (key: string) => {
    const value = env[key];
    if (value === undefined || value === "") return undefined;
    if (!/^\d+$/.test(value)) throw invalidSetting(key, value, "expected an integer");
    return Number(value);
  };
  const options = {
    scheduledDelayMillis: read("OTEL_BSP_SCHEDULE_DELAY"),
    exportTimeoutMillis: read("OTEL_BSP_EXPORT_TIMEOUT"),
    maxQueueSize: read("OTEL_BSP_MAX_QUEUE_SIZE"),
    maxExportBatchSize: read("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
  };
  return Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined));
}

/** Builds tracing from the OTEL_* environment; the SDK is imported only when it is on. */
export async function createTracing(env: Env = process.env): Promise<Tracing> {
  if (!tracingRequested(env)) return noTracing;
  checkExporter(env);
  const protocol = otlpProtocol(env);
  const [{ BatchSpanProcessor, TracerProvider }, { OTLPTraceExporter }, { W3CTraceContextPropagator }, resources] =
    await Promise.all([
      import("@opentelemetry/sdk-trace"),
      protocol === "http/json"
        ? import("@opentelemetry/exporter-trace-otlp-http")
        : import("@opentelemetry/exporter-trace-otlp-proto"),
      import("@opentelemetry/core"),
      import("@opentelemetry/resources"),
    ]);
  const { sampler } = await import("./sampler");
  const resource = resources
    .resourceFromAttributes({ "service.name": serviceName(env) })
    .merge(resources.detectResources({ detectors: [resources.envDetector] }));
  const provider = new TracerProvider({
    resource,
    sampler: await sampler(env),
    // The endpoint from `env` as the specification composes it; the exporter reads the other
    // OTEL_EXPORTER_OTLP_* settings (headers, timeout, compression) itself.
    spanProcessors: [
      new BatchSpanProcessor({ exporter: new OTLPTraceExporter({ url: tracesUrl(env) }), ...batchOptions(env) }),
    ],
  });
  const tracer: Tracer = provider.getTracer("coupon-service");
  const propagator = new W3CTraceContextPropagator();
  const getter = {
    get: (carrier: Headers, key: string) => carrier.get(key) ?? undefined,
    keys: (carrier: Headers) => [...carrier.keys()],
  };
  return {
    enabled: true,
    startRequest(method, path, headers) {
      const parent = propagator.extract(ROOT_CONTEXT, headers, getter);
      const span = tracer.startSpan(
        method,
        { kind: SpanKind.SERVER, attributes: { "http.request.method": method, "url.path": path } },
        parent,
      );
      return { span, context: trace.setSpan(parent, span), traceId: span.spanContext().traceId, method };
    },
    endRequest({ span, method }, route, status) {
      span.updateName(`${method} ${route}`);
      span.setAttributes({ "http.route": route, "http.response.status_code": status });
      if (status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
      span.end();
    },
    startQueueWait(request, coupon) {
      return tracer.startSpan("coupon.claim.queue", { attributes: { "coupon.name": coupon } }, request.context);
    },
    async traceBatch(coupon, requests, decide) {
      const links: Link[] = [];
      for (const request of requests) if (request) links.push({ context: request.span.spanContext() });
      const attributes: Attributes = { "coupon.name": coupon, "coupon.batch.size": requests.length };
      const batch = tracer.startSpan("coupon.claim.batch", { root: true, links, attributes });
      const statement = tracer.startSpan(
        "coupon.claim.batch.sql",
        {
          kind: SpanKind.CLIENT,
          attributes: { "db.system.name": "postgresql", "db.operation.name": "SELECT", "db.query.text": BATCH_SQL },
        },
        trace.setSpan(ROOT_CONTEXT, batch),
      );
      try {
        return await decide();
      } catch (error) {
        for (const span of [statement, batch]) {
          span.recordException(error as Error);
          span.setStatus({ code: SpanStatusCode.ERROR });
        }
        throw error;
      } finally {
        statement.end();
        batch.end();
      }
    },
    shutdown: () => provider.shutdown(),
  };
}
