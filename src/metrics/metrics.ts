// Prometheus metrics for one app instance (own registry, so several apps can live in one process).
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { ClaimStats } from "../domain/claim";
import { type ClaimOutcome, claimOutcomes } from "../domain/outcomes";

export interface Metrics {
  registry: Registry;
  requestDuration: Histogram<"method" | "route" | "status">;
  /** Observes one request's duration under its labels, through a child bound once per label set. */
  observeRequest(method: string, route: string, status: number, seconds: number): void;
  /** One pre-bound counter per outcome: no label hashing on the claim path. */
  claimOutcomes: Record<ClaimOutcome, { inc(): void }>;
}

/** What the metrics read at each scrape. */
export interface MetricSources {
  claims?: Readonly<ClaimStats>;
  /** The claim path's queues: claims waiting or in flight now, and the bound (PENDING_MAX). */
  queue?: { readonly pending: number; readonly pendingMax: number };
  feed?: { readonly live: boolean; leased(): boolean; readonly clock: { readonly offsetMs: number } };
}

/** Creates the registry: requests, claim outcomes, the claim path's counts and queues, the change feed, the process. */
export function createMetrics(sources: MetricSources = {}): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const { claims: stats, feed } = sources;
  const gauge = (name: string, help: string, read: () => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(read());
      },
    });
  if (stats) {
    const counted = (name: string, help: string, read: () => number) =>
      new Counter({
        name,
        help,
        registers: [registry],
        collect() {
          this.reset();
          this.inc(read());
        },
      });
    counted("coupon_claim_batches_total", "Claim batches sent to the database", () => stats.batches);
    counted(
      "coupon_claims_batched_total",
      "Claims and releases sent to the database in batches (average batch size: this / batches)",
      () => stats.batched,
    );
    counted(
      "coupon_claims_from_memory_total",
      "Claims answered from memory, without the database",
      () => stats.fromMemory,
    );
  }
  if (sources.queue) {
    const { queue } = sources;
    gauge("coupon_claims_pending", "Claims and releases waiting or in flight in this process", () => queue.pending);
    gauge(
      "coupon_claims_pending_max",
      "PENDING_MAX: claims waiting or in flight before new ones get 503",
      () => queue.pendingMax,
    );
  }
  if (feed) {
    gauge("coupon_change_feed_up", "1 while the change feed listens, else 0", () => (feed.live ? 1 : 0));
    gauge(
      "coupon_memory_lease_held",
      "1 while answers from memory are allowed (the change feed's lease holds: MEMORY_LEASE_MS), else 0",
      () => (feed.leased() ? 1 : 0),
    );
    gauge(
      "coupon_database_clock_offset_seconds",
      "The database's clock minus this process's, as last measured",
      () => feed.clock.offsetMs / 1000,
    );
  }
  const requestDuration = new Histogram({
    name: "http_request_duration_seconds",
    help: "HTTP request duration by route and status",
    labelNames: ["method", "route", "status"] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  const claims = new Counter({
    name: "coupon_claims_total",
    help: "Claim attempts and releases by outcome",
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
  // prom-client hashes the label object on every observe(); a child per label set skips that. As
  // many children as the histogram itself holds series (routes are labels, not paths: bounded).
  const children = new Map<string, { observe(value: number): void }>();
  const observeRequest = (method: string, route: string, status: number, seconds: number) => {
    const key = `${method} ${status} ${route}`;
    let child = children.get(key);
    if (!child) {
      child = requestDuration.labels({ method, route, status: String(status) });
      children.set(key, child);
    }
    child.observe(seconds);
  };
  return { registry, requestDuration, observeRequest, claimOutcomes: outcomes as Metrics["claimOutcomes"] };
}
