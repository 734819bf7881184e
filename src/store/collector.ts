// A full garbage collection whenever the process has grown by a budget since the last one, while the
// embedded database is open. JavaScriptCore schedules its full collections by the heap's size, and it
// counts PGlite's WebAssembly memory (128 MB at least) in that size: garbage from the HTTP path then
// piles up for a hundred MB and more before a collection. The same service on PostgreSQL never gets
// there, so it runs none of this.

// Measured on the hot coupon at 12k claims/s: 24 MB checked every 200 ms peaked at 255-267 MB resident,
// 16 MB every 100 ms at 226-236 MB, with the same claims/s (docs/benchmarks.md).
const BUDGET_BYTES = 16 * 1024 * 1024;
const INTERVAL_MS = 100;

export interface CollectorOptions {
  /** Growth of the resident set since the last collection that calls for the next one. */
  budgetBytes?: number;
  intervalMs?: number;
  /** The resident set in bytes; replaceable so tests can drive it. */
  rss?: () => number;
  /** A full, synchronous collection; replaceable so tests can count them. */
  collect?: () => void;
}

/** Starts watching the resident set; `stop` ends it. Idle, it never collects: nothing grows. */
export function startCollector(options: CollectorOptions = {}): { stop(): void } {
  const budget = options.budgetBytes ?? BUDGET_BYTES;
  const rss = options.rss ?? (() => process.memoryUsage.rss());
  const collect = options.collect ?? (() => Bun.gc(true));
  let floor = rss();
  const timer = setInterval(() => {
    if (rss() - floor < budget) return;
    collect();
    floor = rss(); // what the collection left: the next budget counts from there
  }, options.intervalMs ?? INTERVAL_MS);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
