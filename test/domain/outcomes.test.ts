// The outcomes table's own rules: what Retry-After may go with, and what an Idempotency-Key may keep.
import { describe, expect, it } from "bun:test";
import { rejections } from "../../src/domain/outcomes";

describe("the outcomes table", () => {
  it("gives Retry-After only to answers that invite a retry (never stored, so a replay never lacks it)", () => {
    const withRetryAfter = Object.entries(rejections).filter(([, row]) => row.retryAfter !== undefined);
    expect(withRetryAfter.length).toBeGreaterThan(0);
    for (const [outcome, row] of withRetryAfter)
      expect({ outcome, retry: row.retry }).toEqual({ outcome, retry: true });
  });

  it("marks sale_not_started as a retry answer: its Retry-After (the time to the opening) is allowed", () => {
    expect(rejections.sale_not_started.retry).toBe(true);
    expect(rejections.already_claimed).not.toHaveProperty("retry");
  });
});
