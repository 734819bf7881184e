import { describe, expect, it } from "bun:test";
import { samplesByPart } from "../../bench/profile-parts";

const node = (id: number, functionName: string, url: string, hitCount: number) => ({
  id,
  callFrame: { functionName, url },
  hitCount,
});

describe("samplesByPart", () => {
  it("sorts self samples by file for JavaScript frames and by name for native ones", () => {
    const parts = samplesByPart([
      node(1, "(root)", "", 0),
      node(2, "handle", "", 5), // Elysia's compiled route handler
      node(3, "readJsonBody", "file:///x/src/http/body.ts", 3),
      node(4, "parse", "", 2), // JSON.parse
      node(5, "observe", "file:///x/src/metrics/request-durations.ts", 1),
      node(6, "DataRow", "file:///x/node_modules/postgres/src/connection.js", 4),
      node(7, "", "", 10),
      node(8, "check", "", 1), // a compiled TypeBox check
    ]);
    const share = (prefix: string) => [...parts].find(([part]) => part.startsWith(prefix))?.[1];
    expect([
      share("framework"),
      share("body"),
      share("metrics"),
      share("SQL"),
      share("native, unattributed"),
      share("validation"),
    ]).toEqual([5, 5, 1, 4, 10, 1]);
    expect([...parts.values()].reduce((sum, count) => sum + count, 0)).toBe(26);
  });
});
