// The rows of `bun run bench` (bench/run.ts): what each scenario drives, the answer it expects, and
// how one wrk run becomes a throughput and an error count.
import type { CpuShare, WrkResult } from "./wrk";

export type Kind = "hot" | "soldout" | "live";

export interface Scenario {
  id: string;
  label: string;
  kind: Kind;
  connections: number;
  /** CLAIM_BATCH_MAX for the service; undefined = its default. */
  batchMax?: number;
  /** Every claim carries its own Idempotency-Key. */
  keys?: boolean;
  /** The service checks bearer JWTs (AUTH_*, bench/jwt.ts) and every claim carries its user's. */
  jwt?: true;
  /** Traces exported over OTLP/HTTP to a sink in this process, sampling this ratio of requests. */
  tracing?: number;
  /** Measures the Redis+Lua peer (bench/redis-peer.ts) instead of the service. */
  peer?: true;
  /** Hot coupons claimed at once, request n of a wrk thread on coupon n mod this; undefined = one. */
  coupons?: number;
}

/** One wrk run, and the coupons it claimed (with the claims made before it, on all of them). */
export interface Run {
  scenario: Scenario;
  phase: "warmup" | "measure";
  /** Empty for a GET. */
  coupons: string[];
  seeded: number;
  result: WrkResult;
  cpu: CpuShare;
  /** The service's (or the peer's) peak resident set size in bytes (VmHWM) once this wrk run ended. */
  peakRss?: number;
}

/** Stock of a hot coupon: it never sells out during a run. */
export const HOT_STOCK = 100_000_000;

export const SCENARIOS: Scenario[] = [
  { id: "hot_c64_b1", label: "hot coupon", kind: "hot", connections: 64, batchMax: 1 },
  { id: "hot_c64", label: "hot coupon", kind: "hot", connections: 64 },
  { id: "hot_c256_b1", label: "hot coupon", kind: "hot", connections: 256, batchMax: 1 },
  { id: "hot_c256", label: "hot coupon", kind: "hot", connections: 256 },
  { id: "hot_c256_jwt", label: "hot coupon, bearer JWT on every claim", kind: "hot", connections: 256, jwt: true },
  { id: "hot_c1024", label: "hot coupon", kind: "hot", connections: 1024 },
  { id: "hot_c256_coupons8", label: "8 hot coupons", kind: "hot", connections: 256, coupons: 8 },
  { id: "hot_c256_coupons64", label: "64 hot coupons", kind: "hot", connections: 256, coupons: 64 },
  {
    id: "hot_c256_keys",
    label: "hot coupon, Idempotency-Key on every claim",
    kind: "hot",
    connections: 256,
    keys: true,
  },
  { id: "hot_c256_trace100", label: "hot coupon, traces at 100%", kind: "hot", connections: 256, tracing: 1 },
  { id: "hot_c256_trace1", label: "hot coupon, traces at 1%", kind: "hot", connections: 256, tracing: 0.01 },
  { id: "soldout_c256", label: "sold-out flood", kind: "soldout", connections: 256 },
  { id: "live_c256", label: "GET /health/live", kind: "live", connections: 256 },
  { id: "peer_hot_c64", label: "Redis+Lua peer: hot coupon", kind: "hot", connections: 64, peer: true },
  { id: "peer_hot_c256", label: "Redis+Lua peer: hot coupon", kind: "hot", connections: 256, peer: true },
  { id: "peer_hot_c1024", label: "Redis+Lua peer: hot coupon", kind: "hot", connections: 1024, peer: true },
  {
    id: "peer_hot_c256_coupons8",
    label: "Redis+Lua peer: 8 hot coupons",
    kind: "hot",
    connections: 256,
    coupons: 8,
    peer: true,
  },
  {
    id: "peer_hot_c256_coupons64",
    label: "Redis+Lua peer: 64 hot coupons",
    kind: "hot",
    connections: 256,
    coupons: 64,
    peer: true,
  },
  { id: "peer_soldout_c256", label: "Redis+Lua peer: sold-out flood", kind: "soldout", connections: 256, peer: true },
  { id: "bare_live_c256", label: "bare Bun.serve: GET /health/live", kind: "live", connections: 256, peer: true },
];

/** The answer each kind of run should get; anything else is an error. */
export const EXPECTED: Record<Kind, string> = { hot: "201", soldout: "409 SOLD_OUT", live: "200" };

/** Answers per second with the expected status (409 SOLD_OUT counts for the sold-out flood). */
export function throughput(run: Run): number {
  return (run.result.statuses[EXPECTED[run.scenario.kind]] ?? 0) / (run.result.duration_us / 1e6);
}

/** Socket errors plus every answer with another status than expected (503, 5xx, unexpected 409…). */
export function errorCount(run: Run): number {
  const { connect, read, write, timeout } = run.result.socket_errors;
  const expected = EXPECTED[run.scenario.kind];
  const unexpected = Object.entries(run.result.statuses).filter(([status]) => status !== expected);
  return connect + read + write + timeout + unexpected.reduce((sum, [, count]) => sum + count, 0);
}
