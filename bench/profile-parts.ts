// The parts of the request path bench/profile.ts sorts a profile's samples into: by file for
// JavaScript frames, by name for native ones. Apart from the runner, so its test loads nothing else.

/** A sampled frame as the .cpuprofile (Chrome format) gives it. */
export interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string };
  hitCount?: number;
}

/** Parts of the path, first match wins: by file for JavaScript frames, by name for native ones. */
const PARTS: [part: string, test: (name: string, url: string) => boolean][] = [
  // Elysia compiles each route's handler ("handle") and response mapping ("map") at run time: no file.
  [
    "framework (Elysia: routing, context, lifecycle, response mapping)",
    (name, url) => url.includes("/elysia/") || (url === "" && (name === "handle" || name === "map")),
  ],
  // TypeBox's compiled checks ("check") and the schemas' patterns, which the profile names by their source.
  ["validation (TypeBox)", (name, url) => url.includes("/typebox/") || name === "check" || name.startsWith("/")],
  [
    "header reads (Headers.get: request id, content type, Idempotency-Key)",
    (name, url) => url === "" && name === "get",
  ],
  [
    "request hooks (request id, path, request log decision, trace)",
    (name, url) => url.endsWith("/src/app.ts") || url.endsWith("/src/http/request.ts") || name === "randomUUID",
  ],
  [
    "body (read, UTF-8, JSON.parse, depth)",
    (name, url) => url.endsWith("/src/http/body.ts") || ["bytes", "decode", "parse"].includes(name),
  ],
  [
    "metrics (request durations and outcomes; prom-client only at a scrape)",
    (_, url) => url.includes("/prom-client/") || url.includes("/src/metrics/"),
  ],
  [
    "claim path (claimer, group commit, memory answers)",
    (_, url) => url.includes("/src/engine/") || url.includes("/src/domain/"),
  ],
  [
    "SQL (Drizzle, postgres.js, statements, results)",
    (_, url) => url.includes("/postgres/") || url.includes("/drizzle-orm/") || url.includes("/src/store/"),
  ],
  [
    "route and answer (handler, problem or 201 body, Response, JSON.stringify)",
    (name, url) => url.includes("/src/http/") || ["Response", "Headers", "stringify", "writeBuffered"].includes(name),
  ],
  ["logs", (_, url) => url.endsWith("/src/log.ts")],
  [
    "promises and timers (await, setImmediate, setTimeout)",
    (name) => ["setImmediate", "setTimeout", "clearTimeout", "then", "asyncFunctionDrive", "resolve"].includes(name),
  ],
  ["other JavaScript", (name, url) => url !== "" || (name !== "" && name !== "anonymous" && name !== "(root)")],
  ["native, unattributed (HTTP server: accept, parse, write; event loop)", () => true],
];

/** Samples per part of the path, from a .cpuprofile's nodes (self samples only). */
export function samplesByPart(nodes: ProfileNode[]): Map<string, number> {
  const totals = new Map<string, number>(PARTS.map(([part]) => [part, 0]));
  for (const node of nodes) {
    const hits = node.hitCount ?? 0;
    if (hits === 0) continue;
    const { functionName, url } = node.callFrame;
    const part = PARTS.find(([, test]) => test(functionName, url))?.[0] as string;
    totals.set(part, (totals.get(part) ?? 0) + hits);
  }
  return totals;
}
