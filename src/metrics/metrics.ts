// Prometheus metrics for one app instance (own registry, so several apps can live in one process).
import { Counter, collectDefaultMetrics, Gauge, Registry } from "prom-client";
import type { ClaimStats } from "../domain/claim";
import { type ClaimOutcome, claimOutcomes } from "../domain/outcomes";
import { type RequestDurations, requestDurations } from "./request-durations";

export interface Metrics {
  registry: Registry;
  /** http_request_duration_seconds by method, route and status. */
  requestDurations: RequestDurations;
  /** One counter per outcome: a plain number on the claim path, read at each scrape. */
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
  const durations = requestDurations(registry);
  // Counted in plain numbers (a prom-client child hashes its labels on every inc()) and handed to the
  // counter at each scrape, every outcome in the table's order, 0 included: rate() works before the
  // first sell-out.
  const counts = Object.fromEntries(claimOutcomes.map((outcome) => [outcome, 0])) as Record<ClaimOutcome, number>;
  new Counter({
    name: "coupon_claims_total",
    help: "Claim attempts and releases by outcome",
    labelNames: ["outcome"] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const outcome of claimOutcomes) this.labels(outcome).inc(counts[outcome]);
    },
  });
  const outcomes = Object.fromEntries(
    claimOutcomes.map((outcome) => [
      outcome,
      {
        inc() {
          counts[outcome]++;
        },
      },
    ]),
  );
  return {
    registry,
    requestDurations: durations,
    claimOutcomes: outcomes as Metrics["claimOutcomes"],
  };
}
