// OpenTelemetry traces, end to end: the real service (under Bun over http/json, and as the compiled
// binary over http/protobuf, the default) exports to an OTLP/HTTP receiver in this test, configured by
// OTEL_* variables alone. A claim's trace holds
// its HTTP span (the child of the caller's traceparent), its wait in the coupon's queue, and a link
// from the batch that decided it, whose SQL is the batch's child; the request's log line carries the
// trace id.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger } from "../../src/log";
import { decideClaims } from "../../src/store/claims";
import { sampler } from "../../src/tracing/sampler";
import { createTracing, noTracing, otlpProtocol, tracingRequested } from "../../src/tracing/tracing";
import { buildApp } from "../support/app";
import { createTestDatabase, type TestDatabase } from "../support/database";
import { client } from "../support/http";
import { attribute, type OtlpSpan, otlpReceiver } from "../support/otlp";
import { until } from "../support/replicas";
import { type Service, startService } from "../support/service";

const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN = "00f067aa0ba902b7";

let database: TestDatabase;
let binaryDir: string;
beforeAll(async () => {
  database = await createTestDatabase();
  binaryDir = mkdtempSync(join(tmpdir(), "coupon-binary-"));
  // The project's own build flags (package.json "build"): the binary must trace as Bun does.
  const build = Bun.spawnSync(
    [
      "bun",
      "build",
      join(import.meta.dir, "../../src/main.ts"),
      "--compile",
      "--minify",
      "--bytecode",
      "--format=esm",
      "--no-compile-autoload-dotenv",
      "--outfile",
      join(binaryDir, "coupon-service"),
    ],
    { stdout: "pipe", stderr: "pipe" },
  );
  if (build.exitCode !== 0) throw new Error(`build failed: ${build.stderr.toString()}`);
}, 120_000);
afterAll(async () => {
  rmSync(binaryDir, { recursive: true, force: true });
  await database.drop();
});

// Each way of running exports in one of the two encodings: JSON when asked, protobuf by default.
const runs = [
  { how: "bun src/main.ts", protocol: { OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" }, type: "application/json" },
  { how: "the compiled binary", protocol: {}, type: "application/x-protobuf" },
] as const;

for (const { how, protocol, type } of runs) {
  describe(`traces from ${how} (${type})`, () => {
    const receiver = otlpReceiver();
    let service: Service;
    const coupon = `TRACED_${how === "bun src/main.ts" ? "BUN" : "BINARY"}`;
    beforeAll(async () => {
      const command = how === "the compiled binary" ? [join(binaryDir, "coupon-service")] : undefined;
      service = await startService(
        {
          DATABASE_URL: database.url,
          OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
          OTEL_SERVICE_NAME: "coupon-under-test",
          OTEL_BSP_SCHEDULE_DELAY: "100",
          ...protocol,
        },
        command,
      );
    });
    afterAll(async () => {
      service.child.kill("SIGTERM");
      await service.child.exited;
      receiver.stop();
    });

    it("exports a claim's HTTP span under the caller's traceparent, its queue wait, and the batch that links to it", async () => {
      expect((await service.api.post("/api/coupons", { name: coupon, amount: 10 })).status).toBe(201);
      const traceparent = { traceparent: `00-${TRACE_ID}-${CALLER_SPAN}-01` };
      const answers = await Promise.all(
        ["ann", "bob", "cid", "dan"].map((user) =>
          service.api.post("/api/coupons/claim", { user_id: user, coupon_name: coupon }, traceparent),
        ),
      );
      expect(answers.map((a) => a.status)).toEqual([201, 201, 201, 201]);
      await until(
        async () =>
          receiver.spans.filter((s) => s.name === "coupon.claim.batch").length > 0 &&
          receiver.spans.filter((s) => s.name === "POST /api/coupons/claim").length === 4,
        "the spans of four claims and their batches exported",
        10_000,
      );
      const http = receiver.spans.filter((s) => s.name === "POST /api/coupons/claim");
      for (const span of http) {
        expect(span.service).toBe("coupon-under-test");
        expect(span.traceId).toBe(TRACE_ID);
        expect(span.parentSpanId).toBe(CALLER_SPAN);
        expect(span.kind).toBe(2); // SERVER
        expect(attribute(span, "http.route")).toBe("/api/coupons/claim");
        expect(attribute(span, "http.response.status_code")).toBe(201);
      }
      // Each claim waited in its coupon's queue, as a child of its HTTP span.
      const waits = receiver.spans.filter((s) => s.name === "coupon.claim.queue");
      expect(waits.map((w) => w.parentSpanId).sort()).toEqual(http.map((h) => h.spanId).sort());
      expect(waits.every((w) => attribute(w, "coupon.name") === coupon && w.traceId === TRACE_ID)).toBe(true);
      // The batches that decided them: each a root of its own, linked to every request it decided,
      // its size the number of links; together they link each claim exactly once.
      const batches = receiver.spans.filter(
        (s) => s.name === "coupon.claim.batch" && attribute(s, "coupon.name") === coupon,
      );
      const linked = batches.flatMap((b) => (b.links ?? []).map((l) => l.spanId));
      expect(linked.sort()).toEqual(http.map((h) => h.spanId).sort());
      for (const batch of batches) {
        expect(batch.parentSpanId ?? "").toBe("");
        expect(attribute(batch, "coupon.batch.size")).toBe(batch.links?.length);
        const sql = receiver.spans.filter(
          (s) => s.name === "coupon.claim.batch.sql" && s.parentSpanId === batch.spanId,
        );
        expect(sql).toHaveLength(1);
        expect(attribute(sql[0] as OtlpSpan, "db.system.name")).toBe("postgresql");
        expect(sql[0]?.traceId).toBe(batch.traceId);
      }
      // The request log lines carry the trace id.
      const lines = service.logs().filter((l) => l.msg === "request" && l.route === "/api/coupons/claim");
      expect(lines.map((l) => l.trace_id)).toEqual(Array(4).fill(TRACE_ID));
      expect(new Set(receiver.contentTypes)).toEqual(new Set([type]));
    }, 30_000);

    it("starts a trace of its own for a request without traceparent", async () => {
      const answer = await service.api.get(`/api/coupons/${coupon}`);
      expect(answer.status).toBe(200);
      await until(
        async () => receiver.spans.some((s) => s.name === "GET /api/coupons/:name"),
        "the read's span exported",
        10_000,
      );
      const read = receiver.spans.find((s) => s.name === "GET /api/coupons/:name") as OtlpSpan;
      expect(read.traceId).not.toBe(TRACE_ID);
      expect(read.parentSpanId ?? "").toBe("");
      const line = service.logs().find((l) => l.msg === "request" && l.route === "/api/coupons/:name");
      expect(line?.trace_id).toBe(read.traceId);
    }, 20_000);
  });
}

describe("traces from an app in this process", () => {
  const receiver = otlpReceiver();
  afterAll(() => receiver.stop());

  it("marks a failed batch and its SQL as errors, answers its claims 503, and exports everything on shutdown", async () => {
    const tracing = await createTracing({
      OTEL_EXPORTER_OTLP_ENDPOINT: `${receiver.url}/`,
      OTEL_BSP_SCHEDULE_DELAY: "60000",
    });
    expect(tracing.enabled).toBe(true);
    let failing = true;
    const lines: Record<string, unknown>[] = [];
    const { app } = buildApp(database.handle.db, {
      tracing,
      log: createLogger("warn", (line) => lines.push(JSON.parse(line))),
      decide: async (...args) => {
        if (failing) throw new Error("the batch failed");
        return decideClaims(...args);
      },
    });
    const api = client(app);
    expect((await api.post("/api/coupons", { name: "IN_PROCESS", amount: 2 })).status).toBe(201);
    const headers = { traceparent: `00-${TRACE_ID}-${CALLER_SPAN}-01` };
    expect((await api.post("/api/coupons/claim", { user_id: "u1", coupon_name: "IN_PROCESS" }, headers)).status).toBe(
      503,
    );
    failing = false;
    expect((await api.post("/api/coupons/claim", { user_id: "u2", coupon_name: "IN_PROCESS" }, headers)).status).toBe(
      201,
    );
    // Unsampled (the caller's flags say so): no queue or batch span for it.
    const unsampled = { traceparent: `00-${TRACE_ID}-${CALLER_SPAN}-00` };
    expect((await api.post("/api/coupons/claim", { user_id: "u3", coupon_name: "IN_PROCESS" }, unsampled)).status).toBe(
      201,
    );
    await tracing.shutdown(); // the 60 s delay never came: this export is the shutdown's flush
    const batches = receiver.spans.filter((s) => s.name === "coupon.claim.batch");
    expect(batches).toHaveLength(2);
    const [failed, decided] = batches as OtlpSpan[] as [OtlpSpan, OtlpSpan];
    expect(failed.status?.code).toBe(2); // ERROR
    const sql = receiver.spans.filter((s) => s.name === "coupon.claim.batch.sql") as (OtlpSpan & {
      status?: { code?: number };
    })[];
    expect(sql.map((s) => s.status?.code ?? 0).sort()).toEqual([0, 2]);
    expect(receiver.spans.filter((s) => s.name === "coupon.claim.queue")).toHaveLength(2);
    const http = receiver.spans.filter((s) => s.name === "POST /api/coupons/claim") as (OtlpSpan & {
      status?: { code?: number };
    })[];
    expect(http).toHaveLength(2); // the unsampled one is not exported
    expect(http.map((s) => s.status?.code ?? 0).sort()).toEqual([0, 2]); // the 503 is an error
    expect(decided.links).toHaveLength(1);
    // The failed batch's log line names the trace of the request it answered 503.
    const failure = lines.find((l) => l.msg === "claim batch failed; its claims were answered 503");
    expect(failure).toMatchObject({ coupon_name: "IN_PROCESS", batch_size: 1, trace_ids: [TRACE_ID] });
  }, 20_000);

  it("puts the request's trace id on the line it logs when the database is unreachable", async () => {
    const tracing = await createTracing({ OTEL_EXPORTER_OTLP_ENDPOINT: `${receiver.url}/` });
    const lines: Record<string, unknown>[] = [];
    // Every query fails as postgres.js does when nothing accepts connections.
    const unreachable = new Proxy(database.handle.db, {
      get: () => () => {
        throw Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:1"), { code: "ECONNREFUSED" });
      },
    });
    const { app } = buildApp(unreachable, {
      tracing,
      log: createLogger("warn", (line) => lines.push(JSON.parse(line))),
    });
    const headers = { traceparent: `00-${TRACE_ID}-${CALLER_SPAN}-01` };
    const res = await client(app).call("GET", "/api/coupons/ANY", { headers });
    expect(res.status).toBe(503);
    expect(lines.find((l) => l.msg === "database unavailable")).toMatchObject({
      path: "/api/coupons/ANY",
      trace_id: TRACE_ID,
      err: { message: "connect ECONNREFUSED 127.0.0.1:1" },
    });
    await tracing.shutdown();
  });
});

describe("tracing configuration", () => {
  it("is off without an OTLP endpoint, and when the SDK or the exporter is switched off", () => {
    expect(tracingRequested({})).toBe(false);
    expect(tracingRequested({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://x:4318" })).toBe(true);
    expect(tracingRequested({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://x:4318/v1/traces" })).toBe(true);
    expect(tracingRequested({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://x:4318", OTEL_SDK_DISABLED: "true" })).toBe(false);
    expect(tracingRequested({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://x:4318", OTEL_TRACES_EXPORTER: "none" })).toBe(
      false,
    );
    expect(noTracing.enabled).toBe(false);
  });

  it("refuses an OTEL_BSP_* setting that is not an integer", async () => {
    await expect(
      createTracing({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:9", OTEL_BSP_SCHEDULE_DELAY: "soon" }),
    ).rejects.toThrow("OTEL_BSP_SCHEDULE_DELAY=");
  });

  it("exports http/protobuf by default, http/json when asked, the traces' own variable first", () => {
    expect(otlpProtocol({})).toBe("http/protobuf");
    expect(otlpProtocol({ OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" })).toBe("http/json");
    expect(
      otlpProtocol({ OTEL_EXPORTER_OTLP_PROTOCOL: "http/json", OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "http/protobuf" }),
    ).toBe("http/protobuf");
    expect(otlpProtocol({ OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "", OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" })).toBe(
      "http/json",
    );
  });

  it.each([
    ["OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"],
    ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/xml"],
    ["OTEL_TRACES_EXPORTER", "zipkin"],
    ["OTEL_TRACES_EXPORTER", "otlp,console"],
  ])("refuses %s=%s at start rather than exporting nowhere", async (key, value) => {
    await expect(createTracing({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:9", [key]: value })).rejects.toThrow(
      `Invalid configuration:\n  - ${key}=${JSON.stringify(value)}: expected`,
    );
  });

  it("samples a batch linked to a sampled request whatever the ratio, and asks the ratio otherwise", async () => {
    const { ROOT_CONTEXT, SpanKind } = await import("@opentelemetry/api");
    const never = await sampler({ OTEL_TRACES_SAMPLER: "always_off" });
    const link = (traceFlags: number) => ({ context: { traceId: TRACE_ID, spanId: CALLER_SPAN, traceFlags } });
    const decide = (links: ReturnType<typeof link>[]) =>
      never.shouldSample(ROOT_CONTEXT, TRACE_ID, "coupon.claim.batch", SpanKind.INTERNAL, {}, links).decision;
    expect(decide([link(0), link(1)])).toBe(2); // RECORD_AND_SAMPLED
    expect(decide([link(0)])).toBe(0); // NOT_RECORD
    expect(decide([])).toBe(0);
  });

  it("reads OTEL_TRACES_SAMPLER and its ratio, and refuses what the specification does not name", async () => {
    expect((await sampler({})).toString()).toContain("ParentBased");
    expect(
      (await sampler({ OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "0.01" })).toString(),
    ).toContain("0.01");
    expect((await sampler({ OTEL_TRACES_SAMPLER: "always_off" })).toString()).toContain("AlwaysOff");
    await expect(sampler({ OTEL_TRACES_SAMPLER: "sometimes" })).rejects.toThrow("OTEL_TRACES_SAMPLER=");
    await expect(sampler({ OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "2" })).rejects.toThrow(
      "OTEL_TRACES_SAMPLER_ARG=",
    );
  });
});
