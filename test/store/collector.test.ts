// The embedded database's garbage collector: a full collection once the resident set has grown by the
// budget since the last one, and none while nothing grows.
import { describe, expect, it } from "bun:test";
import { startCollector } from "../../src/store/collector";

const MB = 1024 * 1024;

/** A collector over a resident set the test sets; `collections` counts its collections. */
function watched(budgetBytes: number) {
  const state = { rss: 100 * MB, collections: 0, leftAfterCollection: 100 * MB };
  const collector = startCollector({
    budgetBytes,
    intervalMs: 5,
    rss: () => state.rss,
    collect: () => {
      state.collections++;
      state.rss = state.leftAfterCollection;
    },
  });
  return { state, collector };
}

describe("startCollector", () => {
  it("never collects while the resident set stays within the budget", async () => {
    const { state, collector } = watched(24 * MB);
    state.rss = 123 * MB;
    await Bun.sleep(50);
    collector.stop();
    expect(state.collections).toBe(0);
  });

  it("collects once the resident set grew by the budget, then counts the next budget from what it left", async () => {
    const { state, collector } = watched(24 * MB);
    state.rss = 124 * MB;
    state.leftAfterCollection = 110 * MB;
    await Bun.sleep(50);
    expect(state.collections).toBe(1);
    state.rss = 133 * MB; // within 24 MB of the 110 MB left: no collection
    await Bun.sleep(50);
    expect(state.collections).toBe(1);
    state.rss = 134 * MB;
    await Bun.sleep(50);
    collector.stop();
    expect(state.collections).toBe(2);
  });

  it("stops collecting once stopped", async () => {
    const { state, collector } = watched(24 * MB);
    collector.stop();
    state.rss = 500 * MB;
    await Bun.sleep(50);
    expect(state.collections).toBe(0);
  });
});
