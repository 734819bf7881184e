// Prometheus metrics for one app instance (own registry, so several apps can live in one process).
import { Counter, collectDefaultMetrics, Histogram, Registry } from "prom-client";
import { type ClaimOutcome, claimOutcomes } from "../coupons/outcomes";

export interface Metrics {
  registry: Registry;
  requestDuration: Histogram<"method" | "route" | "status">;
  /** One pre-bound counter per outcome: no label hashing on the claim path. */
  claimOutcomes: Record<ClaimOutcome, { inc(): void }>;
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
  const claims = new Counter({
    name: "coupon_claims_total",
    help: "Claim attempts by outcome",
    labelNames: ["outcome"] as const,
    registers: [registry],
  });
  // Bound up front, which also exports every outcome at 0, so rate() works before the first sell-out.
  const bind = (outcome: ClaimOutcome) => {
    const child = claims.labels(outcome);
    child.inc(0);
    return child;
  };
  const outcomes = Object.fromEntries(claimOutcomes.map((outcome) => [outcome, bind(outcome)]));
  return { registry, requestDuration, claimOutcomes: outcomes as Metrics["claimOutcomes"] };
}
