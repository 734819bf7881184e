import { describe, expect, it } from "bun:test";
import { Histogram, Registry } from "prom-client";
import { REQUEST_DURATION_BUCKETS, requestDurations } from "../../src/metrics/request-durations";

/** prom-client's own Histogram with the same name, help, labels and buckets: the reference. */
function reference(registry: Registry) {
  return new Histogram({
    name: "http_request_duration_seconds",
    help: "HTTP request duration by route and status",
    labelNames: ["method", "route", "status"] as const,
    buckets: REQUEST_DURATION_BUCKETS,
    registers: [registry],
  });
}

describe("requestDurations", () => {
  // Every observation the service can make: each bucket's edge and either side of it, past the last
  // bound, zero, several label sets (a route with a quote and a backslash, escaped by the registry).
  const values = [0, ...REQUEST_DURATION_BUCKETS.flatMap((bound) => [bound * 0.999, bound, bound * 1.001]), 42];
  const labelSets = [
    ["POST", "/api/coupons/claim", 201],
    ["POST", "/api/coupons/claim", 409],
    ["GET", "unmatched", 404],
    ["GET", '/a"b\\c', 200],
  ] as const;

  it("exposes exactly what prom-client's Histogram exposes for the same observations, text and JSON", async () => {
    for (const contentType of [Registry.PROMETHEUS_CONTENT_TYPE, Registry.OPENMETRICS_CONTENT_TYPE]) {
      const [mine, theirs] = [new Registry(), new Registry()];
      // (The typings fix a registry's content type at its creation; the class switches it.)
      for (const registry of [mine, theirs]) registry.setContentType(contentType as never);
      const durations = requestDurations();
      mine.registerMetric(durations.metric);
      const histogram = reference(theirs);
      for (const [i, value] of values.entries()) {
        const [method, route, status] = labelSets[i % labelSets.length] as (typeof labelSets)[number];
        durations.observe(method, route, status, value);
        histogram.observe({ method, route, status: String(status) }, value);
      }
      expect(await mine.metrics()).toBe(await theirs.metrics());
      expect(await mine.getMetricsAsJSON()).toEqual(await theirs.getMetricsAsJSON());
    }
  });

  it("exposes nothing before the first request, as prom-client does, and forgets on reset", async () => {
    const mine = new Registry();
    const theirs = new Registry();
    const durations = requestDurations();
    mine.registerMetric(durations.metric);
    reference(theirs);
    expect(await mine.metrics()).toBe(await theirs.metrics());
    durations.observe("GET", "/health/live", 200, 0.001);
    mine.resetMetrics();
    expect(await mine.metrics()).toBe(await theirs.metrics());
  });
});
