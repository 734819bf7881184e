import { describe, expect, it } from "bun:test";
import { createMetrics } from "../../src/metrics/metrics";

describe("coupon_claims_total", () => {
  it("exports every outcome from the start, each claim counted once however often it is scraped", async () => {
    const metrics = createMetrics();
    expect((await metrics.scrape()).body).toContain('coupon_claims_total{outcome="sold_out"} 0');
    metrics.claimOutcomes.sold_out.inc();
    metrics.claimOutcomes.sold_out.inc();
    metrics.claimOutcomes.created.inc();
    (await metrics.scrape()).body;
    const text = (await metrics.scrape()).body;
    expect(text).toContain('coupon_claims_total{outcome="sold_out"} 2');
    expect(text).toContain('coupon_claims_total{outcome="created"} 1');
    expect(text).toContain('coupon_claims_total{outcome="already_claimed"} 0');
  });
});
