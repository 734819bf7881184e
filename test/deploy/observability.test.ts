// The observability pack in deploy/observability/: promtool accepts the alerting rules and their unit
// tests pass, every alert is tested and points at a runbook, the Grafana dashboard is well formed, and
// every metric and label value the pack queries is one the service's GET /metrics really exports.
// The promtool tests skip only off CI on a machine without it (`apt-get install prometheus`).
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { join } from "node:path";
import { buildApp } from "../support/app";
import { createTestDatabase, type TestDatabase } from "../support/database";
import { client } from "../support/http";
import { until } from "../support/replicas";

const ROOT = join(import.meta.dir, "../..");
const PACK = join(ROOT, "deploy/observability");
const RULES = "deploy/observability/prometheus-rules.yml";
const RULE_TESTS = "deploy/observability/prometheus-rules.test.yml";

/** Grafana's reference to the dashboard's datasource variable (escaped: not a template placeholder). */
const PROMETHEUS = { type: "prometheus", uid: `\${datasource}` };

const PROMTOOL = process.env.PROMTOOL_PATH ?? Bun.which("promtool");
const withPromtool = PROMTOOL || process.env.CI === "true" ? describe : describe.skip;
if (!PROMTOOL && process.env.CI !== "true") {
  console.warn("test/deploy/observability.test.ts: promtool tests skipped, no promtool (apt-get install prometheus)");
}

interface Rule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
interface Target {
  expr: string;
  datasource?: { type?: string; uid?: string };
}
interface Panel {
  title?: string;
  type: string;
  datasource?: { type?: string; uid?: string };
  targets?: Target[];
}
interface Variable {
  name: string;
  type: string;
  query: string | { query: string };
  datasource?: { type?: string; uid?: string };
}

const rules: Rule[] = (Bun.YAML.parse(await Bun.file(join(PACK, "prometheus-rules.yml")).text()) as any).groups.flatMap(
  (group: { rules: Rule[] }) => group.rules,
);
const ruleTests = Bun.YAML.parse(await Bun.file(join(PACK, "prometheus-rules.test.yml")).text()) as any;
const dashboard = JSON.parse(await Bun.file(join(PACK, "grafana-dashboard.json")).text());
const panels: Panel[] = dashboard.panels;
const variables: Variable[] = dashboard.templating.list;

const variableQuery = (v: Variable) => (typeof v.query === "string" ? v.query : v.query.query);
/** Every PromQL expression of the pack, each with where it comes from. */
const expressions: { where: string; expr: string }[] = [
  ...rules.map((rule) => ({ where: `rule ${rule.alert}`, expr: rule.expr })),
  ...panels.flatMap((panel) => (panel.targets ?? []).map((t) => ({ where: `panel "${panel.title}"`, expr: t.expr }))),
  ...variables
    .filter((v) => v.type === "query")
    .map((v) => ({
      where: `variable $${v.name}`,
      expr: variableQuery(v).replace(/^label_values\((.*),\s*\w+\)$/, "$1"),
    })),
];

// Words of PromQL that look like names but are not metrics.
const KEYWORDS = new Set(["and", "or", "unless", "bool", "offset", "inf", "nan"]);

/** The metric names an expression selects: not functions, labels, strings, ranges or grouping lists. */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, "")
    .replace(/\[[^\]]*\]/g, "")
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, "");
  return [...bare.matchAll(/(?<![\w:.$])[a-zA-Z_:][\w:]*(?![\w:])(?!\s*\()/g)]
    .map((match) => match[0])
    .filter((name) => !KEYWORDS.has(name.toLowerCase()));
}

/** The label matchers of an expression: label, operator, value. */
function matchers(expr: string): { label: string; op: string; value: string }[] {
  return [...expr.matchAll(/\{([^}]*)\}/g)].flatMap((block) =>
    [...(block[1] as string).matchAll(/(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"/g)].map((m) => ({
      label: m[1] as string,
      op: m[2] as string,
      value: m[3] as string,
    })),
  );
}

async function promtool(...args: string[]): Promise<{ code: number; output: string }> {
  const child = Bun.spawn([PROMTOOL ?? "promtool", ...args], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  return { code, output: stdout + stderr };
}

withPromtool("promtool", () => {
  it("accepts prometheus-rules.yml and counts every rule in it", async () => {
    expect(await promtool("check", "rules", RULES)).toEqual({
      code: 0,
      output: expect.stringContaining(`SUCCESS: ${rules.length} rules found`),
    });
  });

  it("passes the rules' unit tests in prometheus-rules.test.yml", async () => {
    const result = await promtool("test", "rules", RULE_TESTS);
    expect(result).toEqual({ code: 0, output: expect.stringContaining("SUCCESS") });
    expect(result.output).not.toContain("FAILED");
  });
});

describe("prometheus-rules.yml", () => {
  it("holds the alerts the service needs: down, absent, 503s, claim latency, feed, clock, queue", () => {
    expect(rules.map((rule) => rule.alert).sort()).toEqual([
      "CouponChangeFeedDown",
      "CouponClaimLatencyHigh",
      "CouponClaimQueueNearFull",
      "CouponDatabaseClockOffset",
      "CouponHigh503Rate",
      "CouponServiceAbsent",
      "CouponServiceDown",
    ]);
  });

  it("gives every alert a for:, a severity of critical or warning, a summary and a runbook in docs/operations.md, Troubleshooting", () => {
    for (const rule of rules) {
      expect({ alert: rule.alert, for: rule.for }).toEqual({
        alert: rule.alert,
        for: expect.stringMatching(/^\d+[smh]$/),
      });
      expect(["critical", "warning"]).toContain(rule.labels?.severity as string);
      expect(rule.annotations?.summary?.length).toBeGreaterThan(0);
      expect(rule.annotations?.description).toContain("Runbook: docs/operations.md, Troubleshooting");
    }
  });

  it("has a promtool unit test that sees every alert fire", () => {
    const fired = new Set<string>(
      ruleTests.tests.flatMap((test: any) =>
        (test.alert_rule_test ?? [])
          .filter((check: any) => (check.exp_alerts ?? []).length > 0)
          .map((check: any) => check.alertname),
      ),
    );
    expect([...fired].sort()).toEqual(rules.map((rule) => rule.alert).sort());
  });
});

describe("grafana-dashboard.json", () => {
  it("is a dashboard of a current Grafana schema with a Prometheus datasource variable and job and instance variables", () => {
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(39);
    expect(dashboard.title).toBe("Coupon service");
    const byName = Object.fromEntries(variables.map((v) => [v.name, v]));
    expect(byName.datasource).toMatchObject({ type: "datasource", query: "prometheus" });
    for (const name of ["job", "instance"]) {
      expect(byName[name]).toMatchObject({ type: "query", datasource: PROMETHEUS });
    }
    expect(variableQuery(byName.instance as Variable)).toContain('job=~"$job"');
  });

  it("gives every panel a title and the datasource variable, on the panel and on each of its queries", () => {
    expect(panels.length).toBeGreaterThanOrEqual(9);
    for (const panel of panels) {
      expect(panel.title?.trim().length).toBeGreaterThan(0);
      expect({ title: panel.title, datasource: panel.datasource }).toEqual({
        title: panel.title,
        datasource: PROMETHEUS,
      });
      expect(panel.targets?.length).toBeGreaterThan(0);
      for (const target of panel.targets ?? [])
        expect(target.datasource).toEqual(panel.datasource as Target["datasource"]);
    }
  });

  it("filters every panel query by the job and instance variables", () => {
    for (const { where, expr } of expressions.filter((e) => e.where.startsWith("panel"))) {
      const selected = matchers(expr);
      expect({ where, job: selected.some((m) => m.label === "job" && m.value === "$job") }).toEqual({
        where,
        job: true,
      });
      expect({ where, instance: selected.some((m) => m.label === "instance" && m.value === "$instance") }).toEqual({
        where,
        instance: true,
      });
    }
  });
});

describe("the pack's queries against GET /metrics", () => {
  let database: TestDatabase;
  /** Names GET /metrics exports, histogram and summary series included; `up` is Prometheus's own. */
  const exported = new Set<string>(["up"]);
  const labelValues = new Map<string, Set<string>>();

  beforeAll(async () => {
    database = await createTestDatabase();
    const api = client(buildApp(database.handle.db).app);
    // A claim, a refusal, a release, a probe and a scrape: the routes and outcomes the pack selects.
    expect((await api.createCoupon("OBS", 1)).status).toBe(201);
    expect((await api.claim("ann", "OBS")).status).toBe(201);
    expect((await api.claim("bob", "OBS")).status).toBe(409);
    expect((await api.call("DELETE", "/api/coupons/OBS/claims/ann")).status).toBe(200);
    await api.get("/health/ready");
    // A request is counted after its answer is sent: scrape until the probe and an earlier scrape are in.
    let text = "";
    await until(async () => {
      text = (await api.get("/metrics")).body as string;
      return ["/health/ready", "/metrics"].every((route) => text.includes(`route="${route}"`));
    }, "the probe and a scrape in http_request_duration_seconds");
    for (const [, name, type] of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
      exported.add(name as string);
      if (type === "histogram") for (const suffix of ["_bucket", "_sum", "_count"]) exported.add(name + suffix);
      if (type === "summary") for (const suffix of ["_sum", "_count"]) exported.add(name + suffix);
    }
    for (const [, labels] of text.matchAll(/^[a-zA-Z_:][\w:]*\{([^}]*)\}/gm)) {
      for (const [, label, value] of (labels as string).matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
        const values = labelValues.get(label as string) ?? new Set<string>();
        labelValues.set(label as string, values.add(value as string));
      }
    }
  });
  afterAll(() => database.drop());

  it("finds the metric names in every expression of the pack", () => {
    for (const { where, expr } of expressions)
      expect({ where, names: metricNames(expr).length > 0 }).toEqual({ where, names: true });
    expect(
      metricNames('sum by (le) (rate(a_bucket{route="/x"}[5m])) / on(job) b_total > 0.25 and up offset 5m'),
    ).toEqual(["a_bucket", "b_total", "up"]);
  });

  it("queries only metrics the service exports (or Prometheus's up)", () => {
    const unknown = expressions.flatMap(({ where, expr }) =>
      metricNames(expr)
        .filter((name) => !exported.has(name))
        .map((name) => `${name} (${where})`),
    );
    expect(unknown).toEqual([]);
  });

  it("shows every coupon_ metric the service exports on the dashboard", () => {
    const shown = new Set(expressions.filter((e) => !e.where.startsWith("rule")).flatMap((e) => metricNames(e.expr)));
    const missing = [...exported].filter((name) => name.startsWith("coupon_") && !shown.has(name));
    expect(missing).toEqual([]);
  });

  it("selects only outcome, route and method values the service exports", () => {
    const wrong: string[] = [];
    for (const { where, expr } of expressions) {
      for (const { label, op, value } of matchers(expr)) {
        const known = labelValues.get(label);
        if (!["outcome", "route", "method"].includes(label)) continue;
        expect({ label, known: (known?.size ?? 0) > 0 }).toEqual({ label, known: true });
        // An equality names one value; each alternative of a regex must match at least one value.
        const alternatives = op.endsWith("~") ? value.split("|") : [value];
        for (const alternative of alternatives) {
          const pattern = new RegExp(
            `^(?:${op.endsWith("~") ? alternative : alternative.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")})$`,
          );
          if (![...(known ?? [])].some((v) => pattern.test(v))) wrong.push(`${label}${op}"${alternative}" (${where})`);
        }
      }
    }
    expect(wrong).toEqual([]);
  });
});
