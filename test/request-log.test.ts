// LOG_REQUESTS through the real app: which requests leave a request line, and at which level.
import { describe, expect, it } from "bun:test";
import { createLogger, type RequestLogMode } from "../src/log";
import { buildApp } from "./support/app";
import { databaseForSuite } from "./support/database";

const database = databaseForSuite();

/** Sends each path to an app logging at `level` with LOG_REQUESTS=`mode`; returns the request lines. */
async function requestLines(mode: RequestLogMode | undefined, level: "debug" | "info", paths: string[]) {
  const lines: Record<string, unknown>[] = [];
  const log = createLogger(level, (line) => lines.push(JSON.parse(line)));
  const { app } = buildApp(database.handle.db, { log, logRequests: mode });
  for (const path of paths) await (await app.handle(new Request(`http://localhost${path}`))).text();
  await Bun.sleep(50); // the line is written after the answer
  return lines.filter((line) => line.msg === "request").map(({ level, path, status }) => ({ level, path, status }));
}

const paths = ["/api/coupons/NOPE", "/health/live", "/docs/assets/swagger-ui.css", "/no/such/route"];

describe("request log lines", () => {
  it("by default, one info line per request, probes and docs assets only at debug", async () => {
    expect(await requestLines(undefined, "info", paths)).toEqual([
      { level: "info", path: "/api/coupons/NOPE", status: 404 },
      { level: "info", path: "/no/such/route", status: 404 },
    ]);
    expect((await requestLines("all", "debug", paths)).map((line) => line.level)).toEqual([
      "info",
      "debug",
      "debug",
      "info",
    ]);
  });

  it("with errors or none, no line for answers below 500", async () => {
    expect(await requestLines("errors", "info", paths)).toEqual([]);
    expect(await requestLines("none", "debug", paths)).toEqual([]);
  });
});
