// The Prometheus registry of one app instance (its own, so several apps can live in one process): the
// process's default metrics, the claim path's counts and queues, the change feed, and what the request
// path counted in plain numbers (metrics.ts). Loaded once the service listens: prom-client's modules
// take a fifth of a start to evaluate, and nothing on the start-up path needs them.
import { Counter, collectDefaultMetrics, Gauge, Registry } from "prom-client";
import type { ClaimStats } from "../domain/claim";
import { type ClaimOutcome, claimOutcomes } from "../domain/outcomes";
import type { RequestDurations } from "./request-durations";

/** What the metrics read at each scrape. */
export interface MetricSources {
  claims?: Readonly<ClaimStats>;
  /** The claim path's queues: claims waiting or in flight now, and the bound (PENDING_MAX). */
  queue?: { readonly pending: number; readonly pendingMax: number };
  feed?: { readonly live: boolean; leased(): boolean; readonly clock: { readonly offsetMs: number } };
}

/** What the request path counts in plain numbers, read at each scrape. */
export interface Counted {
  requestDurations: RequestDurations;
  claimOutcomes: Readonly<Record<ClaimOutcome, number>>;
}

/** Creates the registry: the process, the claim path's counts and queues, the change feed, requests, claim outcomes. */
export function createRegistry(sources: MetricSources, counted: Counted): Registry {
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
    const total = (name: string, help: string, read: () => number) =>
      new Counter({
        name,
        help,
        registers: [registry],
        collect() {
          this.reset();
          this.inc(read());
        },
      });
    total("coupon_claim_batches_total", "Claim batches sent to the database", () => stats.batches);
    total(
      "coupon_claims_batched_total",
      "Claims and releases sent to the database in batches (average batch size: this / batches)",
      () => stats.batched,
    );
    total(
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
  registry.registerMetric(counted.requestDurations.metric);
  // Every outcome in the table's order, 0 included: rate() works before the first sell-out.
  new Counter({
    name: "coupon_claims_total",
    help: "Claim attempts and releases by outcome",
    labelNames: ["outcome"] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const outcome of claimOutcomes) this.labels(outcome).inc(counted.claimOutcomes[outcome]);
    },
  });
  return registry;
}
