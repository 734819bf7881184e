// What one app instance counts for Prometheus. The request path adds to plain numbers (a duration per
// request, an outcome per claim); prom-client's registry (registry.ts) is loaded once the service has
// started, picks them up at each scrape, and reads the claim path's counts and queues and the change
// feed there too.
import type { Registry } from "prom-client";
import { type ClaimOutcome, claimOutcomes } from "../domain/outcomes";
import type { MetricSources } from "./registry";
import { type RequestDurations, requestDurations } from "./request-durations";

export interface Metrics {
  /** http_request_duration_seconds by method, route and status. */
  requestDurations: RequestDurations;
  /** coupon_claims_total: one counter per outcome, a plain number on the claim path. */
  claimOutcomes: Record<ClaimOutcome, { inc(): void }>;
  /** The exposition for GET /metrics (the registry loads on first use, if start-up has not loaded it yet). */
  scrape(): Promise<{ body: string; contentType: string }>;
  /** Loads the registry now (main.ts, once started): the process's GC and event-loop metrics count from then on. */
  load(): Promise<Registry>;
}

/** Creates the counters of the request path; the registry behind GET /metrics loads on load() or the first scrape. */
export function createMetrics(sources: MetricSources = {}): Metrics {
  const durations = requestDurations();
  const counts = Object.fromEntries(claimOutcomes.map((outcome) => [outcome, 0])) as Record<ClaimOutcome, number>;
  const outcomes = Object.fromEntries(
    claimOutcomes.map((outcome) => [
      outcome,
      {
        inc() {
          counts[outcome]++;
        },
      },
    ]),
  ) as Metrics["claimOutcomes"];
  let registry: Promise<Registry> | undefined;
  const load = () => {
    registry ??= import("./registry").then(({ createRegistry }) =>
      createRegistry(sources, { requestDurations: durations, claimOutcomes: counts }),
    );
    return registry;
  };
  return {
    requestDurations: durations,
    claimOutcomes: outcomes,
    load,
    async scrape() {
      const loaded = await load();
      return { body: await loaded.metrics(), contentType: loaded.contentType };
    },
  };
}
