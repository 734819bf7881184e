import { describe, expect, it } from "bun:test";
import { createMetrics } from "../../src/metrics/metrics";

describe("observeRequest", () => {
  // It binds a child per label set once; a mix-up of the cache key would count one series as another.
  it("counts each method, route and status as its own series, as observe() with labels does", async () => {
    const metrics = createMetrics();
    for (let i = 0; i < 3; i++) metrics.observeRequest("POST", "/api/coupons/claim", 409, 0.002);
    metrics.observeRequest("POST", "/api/coupons/claim", 201, 0.02);
    metrics.observeRequest("GET", "/api/coupons/claim", 409, 0.002);
    metrics.requestDuration.observe({ method: "POST", route: "/api/coupons/claim", status: "201" }, 0.02);
    const text = await metrics.registry.metrics();
    const count = (method: string, status: number) =>
      new RegExp(
        `http_request_duration_seconds_count\\{method="${method}",route="/api/coupons/claim",status="${status}"\\} (\\d+)`,
      ).exec(text)?.[1];
    expect([count("POST", 409), count("POST", 201), count("GET", 409)]).toEqual(["3", "2", "1"]);
    expect(text).toContain(
      'http_request_duration_seconds_bucket{le="0.0025",method="POST",route="/api/coupons/claim",status="409"} 3',
    );
  });
});
