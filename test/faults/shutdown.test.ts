// SIGTERM under load, on the real entry point (src/main.ts in a child process): readiness turns 503 at
// once, in-flight claims finish and are answered, and the process exits 0 within its grace period.
import { describe, expect, it } from "bun:test";
import type { Client } from "../support/http";
import { expectStockInvariant } from "../support/invariant";
import { proxiedDatabaseForSuite } from "../support/proxy";
import { sendRaw, startService as startChild } from "../support/service";

const suite = proxiedDatabaseForSuite();

/** Starts the service on a free port with its database behind the proxy; resolves once it listens. */
const startService = (env: Record<string, string>) => startChild({ DATABASE_URL: suite.proxy.url, ...env });

/** Fires `count` concurrent claims on `coupon` with fresh users; each settles to a status or "no answer". */
function claimBurst(api: Client, coupon: string, count: number, prefix: string) {
  return Array.from({ length: count }, (_, i) =>
    api.claim(`${prefix}-${i}`, coupon).then(
      (res) => ({ user: `${prefix}-${i}`, status: res.status as number | "no answer" }),
      () => ({ user: `${prefix}-${i}`, status: "no answer" as const }),
    ),
  );
}

describe("SIGTERM under load", () => {
  it("turns readiness 503, answers every in-flight claim, and exits 0", async () => {
    const { child, api, finalLogs } = await startService({ SHUTDOWN_DELAY_MS: "400", SHUTDOWN_GRACE_MS: "8000" });
    expect((await api.createCoupon("drain", 1000)).status).toBe(201);
    expect((await Promise.all(claimBurst(api, "drain", 20, "before"))).every((r) => r.status === 201)).toBe(true);

    suite.proxy.stall(); // hold the next claims in flight inside the service
    const inFlight = claimBurst(api, "drain", 30, "inflight");
    await Bun.sleep(300);
    child.kill("SIGTERM");
    await Bun.sleep(100);
    const ready = await api.get("/health/ready");
    expect([ready.status, ready.body.status]).toEqual([503, "draining"]);
    await Bun.sleep(400);
    suite.proxy.restore();

    const answered = await Promise.all(inFlight);
    expect(answered.map((r) => r.status)).toEqual(Array(30).fill(201));
    expect(await child.exited).toBe(0);
    const messages = (await finalLogs()).map((l) => l.msg);
    expect(messages).toContain("shutting down: draining in-flight requests");
    expect(messages.at(-1)).toBe("stopped");

    const stored = await suite.database.sql`select count(*)::int as n from claims where coupon_name = 'drain'`;
    expect(stored[0]?.n).toBe(50);
    await expectStockInvariant(suite.database.sql, "drain");
  }, 30_000);

  it("gives up on requests stuck past the grace period and still exits 0 in time", async () => {
    const { child, api } = await startService({ SHUTDOWN_GRACE_MS: "1000", REQUEST_TIMEOUT_MS: "60000" });
    expect((await api.createCoupon("stuck", 10)).status).toBe(201);
    suite.proxy.stall();
    const stuck = claimBurst(api, "stuck", 3, "stuck");
    await Bun.sleep(200);
    const killedAt = Date.now();
    child.kill("SIGTERM");
    expect(await child.exited).toBe(0);
    expect(Date.now() - killedAt).toBeLessThan(1000 + 2500); // grace + closing the pool (its own bound)
    await Promise.all(stuck);
    suite.proxy.restore();
    await expectStockInvariant(suite.database.sql, "stuck");
  }, 30_000);

  it("answers requests in flight when it stops accepting with Connection: close, and Bun closes their connection", async () => {
    const { child, api, port } = await startService({ SHUTDOWN_GRACE_MS: "8000" });
    expect((await api.createCoupon("closing", 10)).status).toBe(201);
    const claim = (user: string) => {
      const body = JSON.stringify({ user_id: user, coupon_name: "closing" });
      return `POST /api/coupons/claim HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
    };
    // HTTP/1.1 keeps the connection open by default: before the signal, the answer says nothing and it stays.
    const before = await sendRaw(port, claim("before"), 500);
    expect([before.status, before.closedByServer, /^connection: close/im.test(before.text)]).toEqual([
      201,
      false,
      false,
    ]);
    suite.proxy.stall(); // hold the next claim in flight across the stop
    const inFlight = sendRaw(port, claim("in-flight"), 5000);
    await Bun.sleep(300);
    child.kill("SIGTERM");
    await Bun.sleep(300); // SHUTDOWN_DELAY_MS is 0: the server has stopped accepting
    suite.proxy.restore();
    const answer = await inFlight;
    expect([answer.status, answer.closedByServer, /^connection: close/im.test(answer.text)]).toEqual([201, true, true]);
    expect(await child.exited).toBe(0);
  }, 30_000);
});
