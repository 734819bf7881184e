// A line chart as SVG text, written by hand so the benchmark needs no plotting dependency: `bun run
// bench` draws claims/s against connections for the service and the Redis+Lua peer with it.

/** One line of the chart: its name in the legend and its points. */
export interface Series {
  name: string;
  points: { x: number; y: number }[];
}

export interface LineChart {
  title: string;
  /** A second line under the title: where the figures come from. */
  note: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
}

const WIDTH = 760;
const HEIGHT = 420;
// Room for the title and note above, the axis labels left and below, the legend right.
const PLOT = { left: 90, right: 540, top: 70, bottom: 350 };
const COLOURS = ["#1f6fb4", "#d0452f", "#2a9d55", "#8a5cc2"];
const Y_TICKS = 5;

/** Escapes text for an SVG text node or attribute. */
const escapeXml = (text: string) =>
  text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;").replaceAll('"', "&quot;");

/** A whole number with thousands separators, e.g. 12,345. */
const figure = (value: number) => Math.round(value).toLocaleString("en-US");

/** The smallest 1, 2 or 5 × 10^k at or above `value`, so the y axis ends on a round figure. */
export function roundUp(value: number): number {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  const step = [1, 2, 5, 10].find((candidate) => candidate * power >= value) ?? 10;
  return step * power;
}

/**
 * The chart as a standalone SVG document. The x values of all series are placed evenly in order (64,
 * 256, 1,024 connections: a log scale), the y axis runs from 0; every point is labelled with its value.
 */
export function lineChart(chart: LineChart): string {
  const xs = [...new Set(chart.series.flatMap((line) => line.points.map((point) => point.x)))].sort((a, b) => a - b);
  const top = roundUp(Math.max(0, ...chart.series.flatMap((line) => line.points.map((point) => point.y))));
  const step = (PLOT.right - PLOT.left) / Math.max(1, xs.length);
  const xAt = (x: number) => PLOT.left + step * (xs.indexOf(x) + 0.5);
  const yAt = (y: number) => PLOT.bottom - ((PLOT.bottom - PLOT.top) * y) / top;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" font-family="sans-serif" font-size="12">`,
    // The title element is what screen readers and hover tooltips show.
    `<title>${escapeXml(chart.title)}</title>`,
    `<rect width="${WIDTH}" height="${HEIGHT}" fill="#ffffff"/>`,
    `<text x="${WIDTH / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">${escapeXml(chart.title)}</text>`,
    `<text x="${WIDTH / 2}" y="44" text-anchor="middle" fill="#555555">${escapeXml(chart.note)}</text>`,
    ...yAxis(top, yAt, chart.yLabel),
    ...xAxis(xs, xAt, chart.xLabel),
    ...chart.series.flatMap((line, index) =>
      drawSeries(line, COLOURS[index % COLOURS.length] as string, xAt, yAt, lowest(chart.series)),
    ),
    ...legend(chart.series),
    "</svg>",
    "",
  ].join("\n");
}

/** Grid lines and figures every fifth of the way up, the axis line and its label. */
function yAxis(top: number, yAt: (y: number) => number, label: string): string[] {
  const ticks = Array.from({ length: Y_TICKS + 1 }, (_, tick) => (top * tick) / Y_TICKS);
  const middle = (PLOT.top + PLOT.bottom) / 2;
  return [
    ...ticks.flatMap((value) => [
      `<line x1="${PLOT.left}" y1="${yAt(value)}" x2="${PLOT.right}" y2="${yAt(value)}" stroke="#e3e3e3"/>`,
      `<text x="${PLOT.left - 8}" y="${yAt(value) + 4}" text-anchor="end">${figure(value)}</text>`,
    ]),
    `<line x1="${PLOT.left}" y1="${PLOT.top}" x2="${PLOT.left}" y2="${PLOT.bottom}" stroke="#333333"/>`,
    `<text x="24" y="${middle}" text-anchor="middle" transform="rotate(-90 24 ${middle})">${escapeXml(label)}</text>`,
  ];
}

/** The axis line, one label per x value, and the axis label under them. */
function xAxis(xs: number[], xAt: (x: number) => number, label: string): string[] {
  return [
    `<line x1="${PLOT.left}" y1="${PLOT.bottom}" x2="${PLOT.right}" y2="${PLOT.bottom}" stroke="#333333"/>`,
    ...xs.map((x) => `<text x="${xAt(x)}" y="${PLOT.bottom + 18}" text-anchor="middle">${figure(x)}</text>`),
    `<text x="${(PLOT.left + PLOT.right) / 2}" y="${PLOT.bottom + 42}" text-anchor="middle">${escapeXml(label)}</text>`,
  ];
}

/** Whether a point is the lowest of several at its x: its value then goes below it, so two close points' values do not overlap. */
function lowest(series: Series[]): (point: { x: number; y: number }) => boolean {
  return (point) => {
    const ys = series.flatMap((line) => line.points.filter((other) => other.x === point.x).map((other) => other.y));
    return ys.length > 1 && point.y === Math.min(...ys);
  };
}

/** The series' line, a dot per point and its value above it (below it when `below` says so). */
function drawSeries(
  line: Series,
  colour: string,
  xAt: (x: number) => number,
  yAt: (y: number) => number,
  below: (point: { x: number; y: number }) => boolean,
): string[] {
  const points = [...line.points].sort((a, b) => a.x - b.x);
  const path = points.map((point) => `${xAt(point.x)},${yAt(point.y)}`).join(" ");
  return [
    `<polyline points="${path}" fill="none" stroke="${colour}" stroke-width="2"/>`,
    ...points.flatMap((point) => [
      `<circle cx="${xAt(point.x)}" cy="${yAt(point.y)}" r="4" fill="${colour}"/>`,
      `<text x="${xAt(point.x)}" y="${yAt(point.y) + (below(point) ? 20 : -10)}" text-anchor="middle" fill="${colour}">${figure(point.y)}</text>`,
    ]),
  ];
}

/** One swatch and name per series, right of the plot. */
function legend(series: Series[]): string[] {
  return series.flatMap((line, index) => {
    const y = PLOT.top + 10 + index * 22;
    const colour = COLOURS[index % COLOURS.length] as string;
    return [
      `<rect x="${PLOT.right + 20}" y="${y - 9}" width="14" height="10" fill="${colour}"/>`,
      `<text x="${PLOT.right + 40}" y="${y}">${escapeXml(line.name)}</text>`,
    ];
  });
}
