// http_request_duration_seconds without prom-client's per-observation work. Its Histogram hashes the
// label object, validates it and searches the buckets on every observe() (6% of a sold-out flood's
// samples went to metrics, bench/profile.ts); here a request adds to a series found by one string key,
// and the registry asks for the same exposition prom-client's Histogram gives
// (test/metrics/request-durations.test.ts compares the two).
import type { Registry } from "prom-client";

export const REQUEST_DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const NAME = "http_request_duration_seconds";
const HELP = "HTTP request duration by route and status";

interface Series {
  /** The label set, in the order prom-client writes it. */
  labels: { method: string; route: string; status: string };
  /** Observations per bucket (not cumulative); past the last bound they count in `count` only. */
  buckets: number[];
  sum: number;
  count: number;
}

export interface RequestDurations {
  observe(method: string, route: string, status: number, seconds: number): void;
  /** The metric for a prom-client registry (registerMetric), which reads the series at each scrape. */
  readonly metric: Parameters<Registry["registerMetric"]>[0];
}

/** Counts http_request_duration_seconds; observe() is the only per-request work. */
export function requestDurations(): RequestDurations {
  const series = new Map<string, Series>();
  // A value pair as prom-client's Histogram gives it to the registry: own labels (le) apart from the
  // series' labels, which the registry formats once per label object.
  // (Buckets carry a null exemplar, sums and counts none, as there.)
  const pair = (labels: object, value: number, metricName: string, sharedLabels: object, exemplar?: null) => ({
    labels,
    sharedLabels,
    value,
    metricName,
    exemplar,
  });
  const exported = (one: Series) => {
    let cumulative = 0;
    return [
      ...REQUEST_DURATION_BUCKETS.map((le, i) => {
        cumulative += one.buckets[i] as number;
        return pair({ le }, cumulative, `${NAME}_bucket`, one.labels, null);
      }),
      pair({ le: "+Inf" }, one.count, `${NAME}_bucket`, one.labels, null),
      pair({}, one.sum, `${NAME}_sum`, one.labels),
      pair({}, one.count, `${NAME}_count`, one.labels),
    ];
  };
  const getForPromString = async () => ({
    name: NAME,
    help: HELP,
    type: "histogram",
    values: [...series.values()].flatMap(exported),
    aggregator: "sum",
  });
  const metric = {
    name: NAME,
    help: HELP,
    type: "histogram",
    aggregator: "sum",
    getForPromString,
    // The JSON form, as prom-client's: each value's labels with the series' merged in.
    get: async () => {
      const metric = await getForPromString();
      const values = metric.values.map(({ labels, sharedLabels, ...rest }) => ({
        ...rest,
        labels: { ...labels, ...sharedLabels },
      }));
      return { ...metric, values };
    },
    reset: () => series.clear(),
  } as unknown as RequestDurations["metric"];
  return {
    metric,
    observe(method, route, status, seconds) {
      const key = `${method} ${status} ${route}`;
      let one = series.get(key);
      if (!one) {
        one = {
          labels: { method, route, status: String(status) },
          buckets: REQUEST_DURATION_BUCKETS.map(() => 0),
          sum: 0,
          count: 0,
        };
        series.set(key, one);
      }
      const bucket = REQUEST_DURATION_BUCKETS.findIndex((bound) => seconds <= bound);
      if (bucket !== -1) one.buckets[bucket] = (one.buckets[bucket] as number) + 1;
      one.sum += seconds;
      one.count += 1;
    },
  };
}
