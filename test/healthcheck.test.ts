// `coupon-service healthcheck`: exit 0 when ready, else 1 with one line on stderr saying why.
import { afterAll, describe, expect, it } from "bun:test";
import { checkReadiness } from "../src/healthcheck";
import { runToExit } from "./support/service";

/** A server on a free loopback port answering every request with `answer`. */
const serve = (answer: () => Response | Promise<Response>) =>
  Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: answer });

const closedPort = () => {
  const probe = serve(() => new Response());
  const port = probe.port as number;
  probe.stop(true);
  return port;
};

const notReadyBody = { status: "not ready", checks: { database: "unreachable", migrations: "unknown" } };
const ready = serve(() => Response.json({ status: "ready", checks: { database: "ok", migrations: "ok" } }));
const notReady = serve(() => Response.json(notReadyBody, { status: 503 }));
const stalled = serve(() => Bun.sleep(5_000).then(() => new Response()));
afterAll(() => {
  for (const server of [ready, notReady, stalled]) server.stop(true);
});

describe("checkReadiness", () => {
  it("is satisfied by a 200", async () => {
    expect(await checkReadiness(ready.port as number)).toBeUndefined();
  });

  it("names a refused connection and its port", async () => {
    const port = closedPort();
    expect(await checkReadiness(port)).toBe(
      `not ready: connection refused on 127.0.0.1:${port} (is the service running?)`,
    );
  });

  it("gives the status and the readiness checks of a 503", async () => {
    expect(await checkReadiness(notReady.port as number)).toBe(
      'not ready: 503 {"database":"unreachable","migrations":"unknown"}',
    );
  });

  it("says how long it waited for a server that does not answer", async () => {
    expect(await checkReadiness(stalled.port as number, 200)).toBe(
      `not ready: no answer from 127.0.0.1:${stalled.port} within 0.2 s`,
    );
  });
});

describe("coupon-service healthcheck", () => {
  it("exits 0 and says nothing when ready", async () => {
    const { code, stderr, stdout } = await runToExit(["healthcheck"], { PORT: String(ready.port) });
    expect({ code, stderr, stdout }).toEqual({ code: 0, stderr: "", stdout: "" });
  });

  it("exits 1 with the reason in one stderr line when not ready", async () => {
    const { code, stderr } = await runToExit(["healthcheck"], { PORT: String(notReady.port) });
    expect({ code, stderr }).toEqual({
      code: 1,
      stderr: 'not ready: 503 {"database":"unreachable","migrations":"unknown"}\n',
    });
  });
});
