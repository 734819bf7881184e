// Prometheus metrics for one app instance (own registry, so several apps can live in one process).
import { Counter, collectDefaultMetrics, Histogram, Registry } from "prom-client";
import type { ClaimOutcome } from "../coupons/claim";

export interface Metrics {
  registry: Registry;
  requestDuration: Histogram<"method" | "route" | "status">;
  claimOutcomes: Counter<"outcome">;
}

/** Creates the registry with the request histogram, the claim-outcome counter and process metrics. */
export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const requestDuration = new Histogram({
    name: "http_request_duration_seconds",
    help: "HTTP request duration by route and status",
    labelNames: ["method", "route", "status"] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  const claimOutcomes = new Counter({
    name: "coupon_claims_total",
    help: "Claim attempts by outcome",
    labelNames: ["outcome"] as const,
    registers: [registry],
  });
  // Every outcome is exported from the start, so rate() works before the first sell-out.
  for (const outcome of ["created", "already_claimed", "sold_out", "not_found"] satisfies ClaimOutcome[]) {
    claimOutcomes.inc({ outcome }, 0);
  }
  return { registry, requestDuration, claimOutcomes };
}
