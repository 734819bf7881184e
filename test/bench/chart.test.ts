// The benchmark's chart (bench/chart.ts) is an SVG a browser can show: one document, its elements
// closed in order, with every series, both axis labels and each point's value on it.
import { describe, expect, it } from "bun:test";
import { lineChart, roundUp } from "../../bench/chart";

const chart = lineChart({
  title: "Claims/s by connections <hot coupon>",
  note: "bun run bench, 10 s per row",
  xLabel: "connections (log scale)",
  yLabel: "claims/s",
  series: [
    {
      name: "the service (PostgreSQL)",
      points: [
        { x: 256, y: 25_144 },
        { x: 64, y: 9_870 },
        { x: 1024, y: 21_003 },
      ],
    },
    {
      name: "Redis+Lua peer",
      points: [
        { x: 64, y: 30_500 },
        { x: 256, y: 43_712 },
        { x: 1024, y: 41_250 },
      ],
    },
  ],
});

/** The element names in document order, with a "/" before closing ones; self-closing ones open and close. */
function tags(svg: string): string[] {
  return [...svg.matchAll(/<(\/?)([a-zA-Z]+)[^>]*?(\/?)>/g)].flatMap(([, closing, name, selfClosing]) =>
    selfClosing ? [name as string, `/${name}`] : [`${closing}${name}`],
  );
}

describe("lineChart", () => {
  it("is one svg document whose elements are all closed, innermost first", () => {
    expect(chart.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(chart.trimEnd().endsWith("</svg>")).toBe(true);
    const open: string[] = [];
    for (const tag of tags(chart)) {
      if (!tag.startsWith("/")) open.push(tag);
      else expect(open.pop()).toBe(tag.slice(1));
    }
    expect(open).toEqual([]);
    expect(tags(chart).filter((tag) => tag === "svg")).toHaveLength(1);
  });

  it("names both series and both axes, and escapes text", () => {
    for (const text of ["the service (PostgreSQL)", "Redis+Lua peer", "connections (log scale)", "claims/s"])
      expect(chart).toContain(`>${text}</text>`);
    expect(chart).toContain("<title>Claims/s by connections &lt;hot coupon&gt;</title>");
  });

  it("draws one line per series and labels each point with its value", () => {
    expect(chart.match(/<polyline /g)).toHaveLength(2);
    expect(chart.match(/<circle /g)).toHaveLength(6);
    for (const value of ["9,870", "25,144", "21,003", "30,500", "43,712", "41,250"])
      expect(chart).toContain(`>${value}</text>`);
  });

  it("labels the x axis with each x value once, in order", () => {
    const labels = [...chart.matchAll(/text-anchor="middle">([\d,]+)<\/text>/g)].map(([, label]) => label);
    const axis = labels.filter((label) => ["64", "256", "1,024"].includes(label as string));
    expect(axis).toEqual(["64", "256", "1,024"]);
  });

  it("places a larger value higher: the y axis runs from 0 up to a round figure above the largest", () => {
    const cy = (value: string) => {
      const at = chart.indexOf(`>${value}</text>`);
      return Number(/cy="([\d.]+)"/.exec(chart.slice(chart.lastIndexOf("<circle", at)))?.[1]);
    };
    expect(cy("43,712")).toBeLessThan(cy("30,500"));
    expect(chart).toContain(">50,000</text>");
    expect(chart).toContain(">0</text>");
  });
});

describe("roundUp", () => {
  it("ends the axis on the next 1, 2 or 5 times a power of ten", () => {
    expect([roundUp(43_712), roundUp(12_000), roundUp(180), roundUp(5), roundUp(0)]).toEqual([
      50_000, 20_000, 200, 5, 1,
    ]);
  });
});
