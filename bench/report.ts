// The output of `bun run bench` (bench/run.ts): the Markdown table of the measured runs, the targets
// with HOLDS or MISSED, and a warning when other programs took the CPU.

import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { lineChart } from "./chart";
import type { EmbeddedResult } from "./embedded";
import { EXPECTED, errorCount, type Run, type Scenario, throughput } from "./scenarios";
import { READY_POLL_MS } from "./service";

/** Where the chart of claims/s by connections goes (docs/benchmarks.md links it). */
const CHART = join(import.meta.dir, "..", "docs", "benchmarks", "claims-by-connections.svg");
const CHART_CONNECTIONS = [64, 256, 1024];

/** CPU (% of one core) used by programs outside the benchmark above which the figures are flagged. */
const OTHER_CPU_WARN = 20;

/** The service's start-to-ready times on PostgreSQL, in ms: the start that migrated the empty database, then idle starts. */
export interface Starts {
  migrating: number;
  ready: number[];
}

/** The middle value (the mean of the two middle ones for an even count). */
function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[middle] as number)
    : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

/** Megabytes (10^6 bytes) with one decimal, or "-" when unknown. */
const mb = (bytes: number | undefined) => (bytes === undefined ? "-" : (bytes / 1e6).toFixed(1));

/** Milliseconds with one decimal, from microseconds. */
const ms = (us: number) => (us / 1000).toFixed(1);

/** Prints the measured runs as a Markdown table (pasteable into docs/benchmarks.md), and the rows skipped and why. */
export function printTable(runs: Run[], skipped: { scenario: Scenario; why: string }[]): void {
  const header = [
    "scenario",
    "connections",
    "CLAIM_BATCH_MAX",
    "req/s (claims/s)",
    "p50 ms",
    "p99 ms",
    "errors",
    "CPU % bun / store / wrk / other",
    "peak RSS MB",
  ];
  const lines = runs.map((run) => [
    run.scenario.label,
    String(run.scenario.connections),
    run.scenario.kind === "live" || run.scenario.peer
      ? "-"
      : run.scenario.batchMax === undefined
        ? "default"
        : String(run.scenario.batchMax),
    Math.round(throughput(run)).toLocaleString("en-US"),
    ms(run.result.p50_us),
    ms(run.result.p99_us),
    `${errorCount(run)}${errorDetail(run)}`,
    `${run.cpu.service} / ${run.cpu.postgres} / ${run.cpu.wrk} / ${run.cpu.other}`,
    mb(run.peakRss),
  ]);
  console.log(`\n| ${header.join(" | ")} |\n|${header.map(() => " --- ").join("|")}|`);
  for (const line of lines) console.log(`| ${line.join(" | ")} |`);
  for (const { scenario, why } of skipped)
    console.log(`| ${scenario.label} | ${scenario.connections} | - | skipped (${why}) | - | - | - | - | - |`);
}

/** Embedded mode's row in the table's columns (the binary with no DATABASE_URL: PGlite in the process). */
export function printEmbeddedRow(embedded: EmbeddedResult): void {
  const { cpu } = embedded;
  const cells = [
    "embedded mode (PGlite): hot coupon",
    "256",
    "default",
    embedded.claimsPerSecond.toLocaleString("en-US"),
    embedded.p50Ms.toFixed(1),
    embedded.p99Ms.toFixed(1),
    String(embedded.errors),
    `${cpu.service} / - / ${cpu.wrk} / ${cpu.other}`,
    embedded.peakRssMb.toFixed(1),
  ];
  console.log(`| ${cells.join(" | ")} |`);
}

/** Embedded mode's start and memory (the table's row does not show them). */
export function printEmbedded(embedded: EmbeddedResult): void {
  const { ledger } = embedded;
  console.log(
    `\nEmbedded mode (dist/coupon-service, no DATABASE_URL, an empty folder): first start ${embedded.firstStartMs.toFixed(0)} ms to ready, restart ${embedded.restartMs.toFixed(0)} ms; RSS ${embedded.idleRssMb.toFixed(1)} MB idle, ${embedded.peakRssMb.toFixed(1)} MB at peak under the hot coupon, ${embedded.endRssMb.toFixed(1)} MB after it`,
  );
  console.log(
    `  ${embeddedLedgerHolds(embedded) ? "PASS" : "FAIL"} embedded ledger (through the API): remaining ${ledger.remaining} + claims ${ledger.claims} = amount ${ledger.amount}; ${ledger.created} answered 201, ${ledger.unanswered} unanswered; ${ledger.afterRestart} claims after the restart`,
  );
}

/** The embedded run's ledger holds, and a restart found the same claims. */
export function embeddedLedgerHolds(embedded: EmbeddedResult): boolean {
  return embedded.ledger.holds && embedded.ledger.afterRestart === embedded.ledger.claims;
}

/** Prints how long the service takes from exec to ready on PostgreSQL (the table's rows do not show it). */
export function printStarts(starts: Starts): void {
  const { ready } = starts;
  console.log(
    `\nStart to ready on PostgreSQL (exec to the first 200 of GET /health/ready, polled every ${READY_POLL_MS} ms): median ${median(ready).toFixed(1)} ms of ${ready.length} idle starts (${Math.min(...ready).toFixed(1)}–${Math.max(...ready).toFixed(1)} ms); the first start, which migrated the empty database: ${starts.migrating.toFixed(1)} ms`,
  );
}

/** Names the unexpected statuses and socket errors behind an error count, e.g. " (503 SERVICE_UNAVAILABLE: 12)". */
function errorDetail(run: Run): string {
  const expected = EXPECTED[run.scenario.kind];
  const parts = Object.entries(run.result.statuses)
    .filter(([status]) => status !== expected)
    .map(([status, count]) => `${status}: ${count}`);
  for (const [kind, count] of Object.entries(run.result.socket_errors))
    if (count > 0) parts.push(`socket ${kind}: ${count}`);
  return parts.length > 0 ? ` (${parts.join(", ")})` : "";
}

/** Prints each performance target with its measured figure and HOLDS or MISSED (never fails the run). */
export function printTargets(
  runs: Run[],
  sink?: { bytes: number; exports: number },
  starts?: Starts,
  embedded?: EmbeddedResult,
): void {
  const find = (id: string) => runs.find((run) => run.scenario.id === id);
  const verdict = (ok: boolean) => (ok ? "HOLDS" : "MISSED");
  console.log("\nTargets");
  for (const connections of [64, 256]) {
    const batched = find(`hot_c${connections}`);
    const single = find(`hot_c${connections}_b1`);
    if (!batched || !single) continue;
    const ratio = throughput(batched) / throughput(single);
    console.log(
      `  hot coupon @${connections}: default / CLAIM_BATCH_MAX=1 = ${ratio.toFixed(2)}x (target >= 3x) ${verdict(ratio >= 3)}`,
    );
  }
  const flood = find("soldout_c256");
  const live = find("live_c256");
  if (flood && live) {
    const ratio = throughput(flood) / throughput(live);
    console.log(
      `  sold-out flood / GET /health/live @256 = ${ratio.toFixed(2)}x (target >= 0.5x) ${verdict(ratio >= 0.5)}`,
    );
  }
  const keyed = find("hot_c256_keys");
  const plain = find("hot_c256");
  if (keyed && plain) {
    const ratio = throughput(keyed) / throughput(plain);
    console.log(
      `  hot coupon @256 with / without Idempotency-Key = ${ratio.toFixed(2)}x (target >= 0.7x) ${verdict(ratio >= 0.7)}`,
    );
  }
  const bearer = find("hot_c256_jwt");
  if (bearer && plain) {
    const ratio = throughput(bearer) / throughput(plain);
    console.log(
      `  hot coupon @256 with / without a bearer JWT on every claim = ${ratio.toFixed(2)}x (target >= 0.8x) ${verdict(ratio >= 0.8)}`,
    );
  }
  for (const [id, label] of [
    ["hot_c256_trace100", "100%"],
    ["hot_c256_trace1", "1%"],
  ] as const) {
    const traced = find(id);
    if (traced && plain)
      console.log(
        `  hot coupon @256 with traces at ${label} / without = ${(throughput(traced) / throughput(plain)).toFixed(2)}x (the cost of tracing; no target)`,
      );
  }
  if (sink) console.log(`  trace sink received ${sink.exports} exports, ${(sink.bytes / 1e6).toFixed(1)} MB`);
  const hot = find("hot_c256");
  if (hot) {
    const p99 = hot.result.p99_us / 1000;
    console.log(`  hot coupon @256 default: p99 = ${p99.toFixed(1)} ms (target <= 25 ms) ${verdict(p99 <= 25)}`);
  }
  if (hot?.peakRss !== undefined) {
    const peak = hot.peakRss / 1e6;
    console.log(
      `  hot coupon @256 default: the service's peak RSS = ${peak.toFixed(1)} MB (target < 150 MB) ${verdict(peak < 150)}`,
    );
  }
  if (starts) {
    const ready = median(starts.ready);
    console.log(
      `  start to ready on PostgreSQL: median ${ready.toFixed(1)} ms of ${starts.ready.length} starts (target < 50 ms) ${verdict(ready < 50)}`,
    );
  }
  if (embedded) {
    const { firstStartMs, idleRssMb, claimsPerSecond, peakRssMb } = embedded;
    console.log(
      `  embedded mode: first start ${firstStartMs.toFixed(0)} ms to ready (target < 500 ms) ${verdict(firstStartMs < 500)}`,
    );
    console.log(`  embedded mode: idle RSS ${idleRssMb.toFixed(1)} MB (target < 150 MB) ${verdict(idleRssMb < 150)}`);
    console.log(
      `  embedded mode: hot coupon @256 ${claimsPerSecond.toLocaleString("en-US")} claims/s (target >= 5,000) ${verdict(claimsPerSecond >= 5000)}, peak RSS ${peakRssMb.toFixed(1)} MB (target < 250 MB) ${verdict(peakRssMb < 250)}`,
    );
  }
  // Against what users pick instead: the Redis+Lua peer and a bare Bun.serve, in the same run.
  const against = (id: string, peerId: string, label: string, target: number) => {
    const mine = find(id);
    const theirs = find(peerId);
    if (!mine || !theirs) return;
    const ratio = throughput(mine) / throughput(theirs);
    console.log(`  ${label} = ${ratio.toFixed(2)}x (target >= ${target}x) ${verdict(ratio >= target)}`);
  };
  against("hot_c256", "peer_hot_c256", "hot coupon @256 / Redis+Lua peer", 1);
  against("soldout_c256", "peer_soldout_c256", "sold-out flood @256 / Redis+Lua peer", 1);
  against("soldout_c256", "bare_live_c256", "sold-out flood @256 / bare Bun.serve trivial route", 0.5);
  against("live_c256", "bare_live_c256", "GET /health/live @256 / bare Bun.serve trivial route", 0.8);
  // How that gap moves with connections and with hot coupons at once: figures only, no targets.
  const gaps = (label: string, pairs: [string, string][]) => {
    const figures = pairs.flatMap(([name, id]) => {
      const mine = find(id);
      const theirs = find(`peer_${id}`);
      return mine && theirs ? [`${name}: ${(throughput(mine) / throughput(theirs)).toFixed(2)}x`] : [];
    });
    if (figures.length > 1) console.log(`  ${label}: ${figures.join(", ")} (no target)`);
  };
  gaps("hot coupon / Redis+Lua peer by connections", [
    ["64", "hot_c64"],
    ["256", "hot_c256"],
    ["1,024", "hot_c1024"],
  ]);
  gaps("hot coupons @256 / Redis+Lua peer by coupons at once", [
    ["1", "hot_c256"],
    ["8", "hot_c256_coupons8"],
    ["64", "hot_c256_coupons64"],
  ]);
}

/** Warns when other programs took a noticeable share of the CPU during a run: its figures are then low. */
export function warnIfBusy(runs: Run[]): void {
  const busy = runs.filter((run) => run.cpu.other >= OTHER_CPU_WARN);
  if (busy.length === 0) return;
  const list = busy.map((run) => `${run.scenario.id} (${run.cpu.other}%)`).join(", ");
  console.log(
    `\nWARNING: other processes used >= ${OTHER_CPU_WARN}% of a core during ${list}; re-run on a quiet machine.`,
  );
}

/**
 * Writes the chart of the hot coupon's claims/s at 64, 256 and 1,024 connections, the service's and the
 * Redis+Lua peer's, when all six rows ran; `note` says where the figures come from.
 */
export function writeConnectionsChart(runs: Run[], note: string): void {
  const line = (prefix: string) =>
    CHART_CONNECTIONS.flatMap((connections) => {
      const run = runs.find((candidate) => candidate.scenario.id === `${prefix}hot_c${connections}`);
      return run ? [{ x: connections, y: throughput(run) }] : [];
    });
  const service = line("");
  const peer = line("peer_");
  if (service.length < CHART_CONNECTIONS.length || peer.length < CHART_CONNECTIONS.length) return;
  const svg = lineChart({
    title: "Hot coupon: claims/s by connections",
    note,
    xLabel: "wrk connections (log scale)",
    yLabel: "claims/s (201s per second)",
    series: [
      { name: "the service (PostgreSQL)", points: service },
      { name: "Redis+Lua peer", points: peer },
    ],
  });
  mkdirSync(dirname(CHART), { recursive: true });
  writeFileSync(CHART, svg);
  console.log(`\nChart of claims/s by connections written to ${relative(process.cwd(), CHART)}`);
}
