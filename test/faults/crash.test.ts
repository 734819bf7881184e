// kill -9 between applying a request and answering it, on the real entry point (src/main.ts in a child
// process) behind a proxy of the test's own that delivers the request and holds the answer: the claim
// or release is committed, the client gets nothing, and once a new process runs on the same database
// (on the same port, behind the same proxy) the same request with the same Idempotency-Key gets the
// lost answer, marked Idempotent-Replayed, while the same request without a key gets what it would now.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "bun:test";
import { createTestDatabase, type TestDatabase } from "../support/database";
import { type ApiResponse, client } from "../support/http";
import { expectStockInvariant } from "../support/invariant";
import { freePort } from "../support/ports";
import { type FaultProxy, startFaultProxy } from "../support/proxy";
import { until } from "../support/replicas";
import { type Service, sendRaw, startService } from "../support/service";

let database: TestDatabase;
let port: number;
let proxy: FaultProxy;
let service: Service | undefined;

/** The service on `port` (the same one every time, so a restart is where the client already points). */
const start = () => startService({ DATABASE_URL: database.url, PORT: String(port), LOG_REQUESTS: "none" });

/** Resolves with `promise`, or fails naming `what` after `ms`. */
async function within<T>(promise: Promise<T>, what: string, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

beforeAll(async () => {
  database = await createTestDatabase();
  port = await freePort();
  proxy = await startFaultProxy(`http://127.0.0.1:${port}`);
});
// Each test kills the service; the next one (or a test that failed before its restart) gets a live one.
beforeEach(async () => {
  proxy.restore();
  if (!service || service.child.exitCode !== null || service.child.signalCode !== null) service = await start();
});
afterAll(async () => {
  if (service && service.child.exitCode === null && service.child.signalCode === null) {
    service.child.kill("SIGKILL");
    await within(service.child.exited, "the service to exit", 5_000);
  }
  await proxy?.close();
  await database?.drop();
}, 20_000);

const api = () => client(proxy.url);
const proxyPort = () => Number(new URL(proxy.url).port);

/** A raw HTTP/1.1 request with an Idempotency-Key, as one string of bytes. */
function rawRequest(method: string, path: string, key: string, json?: unknown): string {
  const body = json === undefined ? "" : JSON.stringify(json);
  const type = json === undefined ? "" : "Content-Type: application/json\r\n";
  return `${method} ${path} HTTP/1.1\r\nHost: localhost\r\n${type}Idempotency-Key: ${key}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
}

interface HeldAnswer {
  status: number;
  headers: Record<string, string>;
  body: any;
}

/** The answer held by the proxy on its way to the client, once it is all there (JSON, Content-Length). */
function heldAnswer(): HeldAnswer | undefined {
  const text = proxy.heldForClients().toString("latin1");
  const end = text.indexOf("\r\n\r\n");
  if (end < 0) return undefined;
  const [statusLine = "", ...lines] = text.slice(0, end).split("\r\n");
  const headers = Object.fromEntries(
    lines.map((line) => [line.slice(0, line.indexOf(":")).toLowerCase(), line.slice(line.indexOf(":") + 1).trim()]),
  );
  const body = Buffer.from(text.slice(end + 4), "latin1");
  if (body.length < Number(headers["content-length"])) return undefined;
  return { status: Number(statusLine.split(" ")[1]), headers, body: JSON.parse(body.toString("utf8")) };
}

/** What one snapshot of the database shows of a request: its effect's rows, and the decision under its key. */
interface Effect {
  rows: number;
  outcome: string | null;
}

/**
 * Sends `raw` through the proxy with the service's answers held, waits until `effect` shows the
 * request committed and the service has written its whole answer, then kills the service with
 * SIGKILL. Returns the answer the client never received, after checking it received nothing, and the
 * first snapshot that showed the effect (with its key's decision: committed together, or not at all).
 */
async function killBetweenApplyAndAnswer(raw: string, effect: () => Promise<Effect>) {
  const live = service as Service;
  proxy.stall("to-client");
  const sent = sendRaw(proxyPort(), raw, 10_000);
  let committed: Effect | undefined;
  await until(
    async () => {
      const seen = await effect();
      if (seen.rows > 0) committed = seen;
      return committed !== undefined;
    },
    "the request to be committed",
    10_000,
  );
  await until(() => heldAnswer() !== undefined, "the service to write its answer", 10_000);
  const lost = heldAnswer() as HeldAnswer;
  live.child.kill("SIGKILL");
  await within(live.child.exited, "the killed service to exit", 5_000);
  expect(live.child.signalCode).toBe("SIGKILL");
  // The proxy drops the client's connection with the server's: not one byte of the answer arrived.
  const received = await sent;
  expect({ text: received.text, closedByServer: received.closedByServer }).toEqual({ text: "", closedByServer: true });
  proxy.restore();
  return { lost, committed };
}

/** `user`'s rows of `coupon` in `table` (claims or claim_releases) and `key`'s decision, in one statement. */
async function effect(table: "claims" | "claim_releases", coupon: string, user: string, key: string): Promise<Effect> {
  const [row] = await database.sql<Effect[]>`
    select (select count(*)::int from ${database.sql(table)} where coupon_name = ${coupon} and user_id = ${user}) as rows,
      (select outcome from idempotency_keys where key = ${key}) as outcome`;
  return row as Effect;
}

const withKey = (key: string) => ({ "idempotency-key": key });
const claim = (user_id: string, coupon_name: string, headers?: Record<string, string>) =>
  api().call("POST", "/api/coupons/claim", { json: { user_id, coupon_name }, headers });
const release = (name: string, user: string, headers?: Record<string, string>) =>
  api().call("DELETE", `/api/coupons/${encodeURIComponent(name)}/claims/${encodeURIComponent(user)}`, { headers });
const replayed = (res: ApiResponse) => res.headers.get("idempotent-replayed");

describe("kill -9 between applying a keyed request and answering it", () => {
  it("answers the retried claim with the same key 201 and the committed claimed_at after a restart, where a retry without a key gets ALREADY_CLAIMED", async () => {
    expect((await api().createCoupon("crash-claim", 2)).status).toBe(201);
    const claimRow = () =>
      database.sql<{ created_at: Date }[]>`
        select created_at from claims where coupon_name = 'crash-claim' and user_id = 'ann'`;

    const { lost, committed } = await killBetweenApplyAndAnswer(
      rawRequest("POST", "/api/coupons/claim", "claim-ann-1", { user_id: "ann", coupon_name: "crash-claim" }),
      () => effect("claims", "crash-claim", "ann", "claim-ann-1"),
    );
    expect([lost.status, lost.headers["idempotent-replayed"]]).toEqual([201, undefined]);
    // The claim and its decision under the key became visible in the same snapshot: one transaction.
    expect(committed).toEqual({ rows: 1, outcome: "created" });

    service = await start();
    const retry = await claim("ann", "crash-claim", withKey("claim-ann-1"));
    const [row] = await claimRow();
    expect([retry.status, replayed(retry)]).toEqual([201, "true"]);
    expect(retry.body).toEqual({
      user_id: "ann",
      coupon_name: "crash-claim",
      claimed_at: row?.created_at.toISOString(),
      seq: 1,
    });
    expect(retry.body).toEqual(lost.body); // the answer the client lost, not a new decision

    // What the key changes: the same retry without it is a second claim, refused.
    const unkeyed = await claim("ann", "crash-claim");
    expect([unkeyed.status, unkeyed.body.code, replayed(unkeyed)]).toEqual([409, "ALREADY_CLAIMED", null]);

    const [coupon] = await database.sql<{ remaining_amount: number; claims: number }[]>`
      select remaining_amount, (select count(*)::int from claims where coupon_name = 'crash-claim') as claims
      from coupons where name = 'crash-claim'`;
    expect(coupon).toEqual({ remaining_amount: 1, claims: 1 });
    await expectStockInvariant(database.sql, "crash-claim");
  }, 40_000);

  it("answers the retried release with the same key 200 with the original released_at and remaining_amount after a restart", async () => {
    expect((await api().createCoupon("crash-release", 2)).status).toBe(201);
    expect((await claim("bob", "crash-release")).status).toBe(201);
    const releaseRow = () =>
      database.sql<{ released_at: Date }[]>`
        select released_at from claim_releases where coupon_name = 'crash-release' and user_id = 'bob'`;

    const { lost, committed } = await killBetweenApplyAndAnswer(
      rawRequest("DELETE", "/api/coupons/crash-release/claims/bob", "release-bob-1"),
      () => effect("claim_releases", "crash-release", "bob", "release-bob-1"),
    );
    expect([lost.status, lost.headers["idempotent-replayed"]]).toEqual([200, undefined]);
    expect(committed).toEqual({ rows: 1, outcome: "released" });

    service = await start();
    // The stock moves after the release: the replay still says what the release left (2), not now (1).
    expect((await claim("cy", "crash-release")).status).toBe(201);
    const retry = await release("crash-release", "bob", withKey("release-bob-1"));
    const [row] = await releaseRow();
    expect([retry.status, replayed(retry)]).toEqual([200, "true"]);
    expect(retry.body).toEqual({
      coupon_name: "crash-release",
      user_id: "bob",
      released_at: row?.released_at.toISOString(),
      remaining_amount: 2,
    });
    expect(retry.body).toEqual(lost.body);

    const unkeyed = await release("crash-release", "bob");
    expect([unkeyed.status, unkeyed.body.code, replayed(unkeyed)]).toEqual([404, "CLAIM_NOT_FOUND", null]);

    const [coupon] = await database.sql<{ remaining_amount: number; releases: number }[]>`
      select remaining_amount,
        (select count(*)::int from claim_releases where coupon_name = 'crash-release') as releases
      from coupons where name = 'crash-release'`;
    expect(coupon).toEqual({ remaining_amount: 1, releases: 1 }); // released once, claimed by cy
    await expectStockInvariant(database.sql, "crash-release");
  }, 40_000);
});
