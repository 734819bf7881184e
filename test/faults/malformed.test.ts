// Malformed requests over raw TCP against the real entry point (src/main.ts in a child process): none
// may end the process, each one that reaches the app is answered truthfully and logged, and the
// service still answers a normal claim afterwards.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { createTestDatabase, type TestDatabase } from "../support/database";
import { type RawAnswer, type Service, sendRaw, startService } from "../support/service";

let database: TestDatabase;
let service: Service;
beforeAll(async () => {
  database = await createTestDatabase();
  // Probes log their request line at debug (LOG_REQUESTS, src/log.ts); most cases here are probes.
  service = await startService({ DATABASE_URL: database.url, LOG_LEVEL: "debug", LOG_REQUESTS: "all" });
  expect((await service.api.createCoupon("EDGE", 100)).status).toBe(201);
});
afterAll(async () => {
  service.child.kill("SIGKILL");
  await service.child.exited;
  await database.drop();
});

const claimBody = (user: string) => JSON.stringify({ user_id: user, coupon_name: "EDGE" });
/** A raw request; `id` goes into X-Request-Id so its log line can be found. */
const request = (line: string, id: string, headers: string[] = [], body = "") =>
  `${line}\r\n${[...headers, `X-Request-Id: ${id}`].join("\r\n")}\r\n\r\n${body}`;
const claim = (version: string, id: string, host: string[], body: string, length = Buffer.byteLength(body)) =>
  request(
    `POST /api/coupons/claim ${version}`,
    id,
    [...host, "Content-Type: application/json", `Content-Length: ${length}`],
    body,
  );

interface Case {
  name: string;
  bytes: string | Uint8Array;
  /** The status answered (by the app, or by Bun's own HTTP parser for the last group). */
  status?: number;
  /** The problem code, when the app answers. */
  code?: string;
  /** The X-Request-Id it carries, when it reaches the app and must leave a request log line. */
  logged?: string;
  waitMs?: number;
}

/** `prefix` + bytes that are not UTF-8 (a lead byte without its continuation, then 0xFF) + `suffix`. */
const notUtf8 = (prefix: string, suffix: string) =>
  Buffer.concat([Buffer.from(prefix, "latin1"), Buffer.from([0xc3, 0x28, 0xff]), Buffer.from(suffix, "latin1")]);
const badBody = notUtf8('{"user_id":"a', '","coupon_name":"EDGE"}');

const cases: Case[] = [
  // Reaches the app: no usable Host. Bun then hands over a URL without origin ("/health/live").
  { name: "HTTP/1.0 without Host", bytes: request("GET /health/live HTTP/1.0", "m1"), status: 200, logged: "m1" },
  {
    name: "empty Host",
    bytes: request("GET /health/live HTTP/1.1", "m2", ["Host:", "Connection: close"]),
    status: 200,
    logged: "m2",
  },
  {
    name: "Host: [::1",
    bytes: request("GET /health/live HTTP/1.1", "m3", ["Host: [::1", "Connection: close"]),
    status: 200,
    logged: "m3",
  },
  {
    name: "Host: a b",
    bytes: request("GET /health/ready HTTP/1.1", "m4", ["Host: a b", "Connection: close"]),
    status: 200,
    logged: "m4",
  },
  { name: "claim without Host", bytes: claim("HTTP/1.0", "m5", [], claimBody("no-host")), status: 201, logged: "m5" },
  { name: "read without Host", bytes: request("GET /api/coupons/EDGE HTTP/1.0", "m6"), status: 200, logged: "m6" },
  // Elysia slices the path from a fixed offset: these were served as /health/live.
  {
    name: "unknown path without Host",
    bytes: request("GET /xxxxxxxxxx/health/live HTTP/1.0", "m7"),
    status: 404,
    code: "NOT_FOUND",
    logged: "m7",
  },
  {
    name: "unknown path, 2-letter Host",
    bytes: request("GET /xxx/health/live HTTP/1.1", "m8", ["Host: ab", "Connection: close"]),
    status: 404,
    code: "NOT_FOUND",
    logged: "m8",
  },
  // Bad percent-encodings and invalid UTF-8.
  {
    name: "%ZZ in a name",
    bytes: request("GET /api/coupons/%ZZ HTTP/1.0", "m9"),
    status: 400,
    code: "VALIDATION_FAILED",
    logged: "m9",
  },
  {
    name: "truncated %E0%A4%A",
    bytes: request("GET /api/coupons/%E0%A4%A HTTP/1.1", "m10", ["Host: localhost", "Connection: close"]),
    status: 400,
    code: "VALIDATION_FAILED",
    logged: "m10",
  },
  {
    name: "invalid UTF-8 bytes in the path",
    bytes: notUtf8(
      "GET /api/coupons/",
      " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX-Request-Id: m11\r\n\r\n",
    ),
    status: 404,
    code: "COUPON_NOT_FOUND",
    logged: "m11",
  },
  {
    name: "invalid UTF-8 bytes in the body",
    bytes: Buffer.concat([Buffer.from(claim("HTTP/1.0", "m12", [], "", badBody.length), "latin1"), badBody]),
    status: 400,
    code: "VALIDATION_FAILED",
    logged: "m12",
  },
  // Bodies: over the cap (declared, and chunked), and a declared length the body never reaches.
  {
    name: "Content-Length over the cap",
    bytes: claim("HTTP/1.1", "m13", ["Host: localhost", "Connection: close"], "", 9000),
    status: 413,
    code: "PAYLOAD_TOO_LARGE",
    logged: "m13",
  },
  {
    name: "chunked body over the cap",
    bytes: request(
      "POST /api/coupons/claim HTTP/1.1",
      "m14",
      ["Host: localhost", "Connection: close", "Content-Type: application/json", "Transfer-Encoding: chunked"],
      `2400\r\n${"x".repeat(0x2400)}\r\n0\r\n\r\n`,
    ),
    status: 413,
    code: "PAYLOAD_TOO_LARGE",
    logged: "m14",
  },
  {
    name: "body shorter than Content-Length",
    bytes: claim("HTTP/1.0", "m15", [], claimBody("short"), 500),
    logged: "m15",
    waitMs: 500,
  },
  // The excess is parsed as a next request: Bun refuses it with 400 and closes at once, dropping the
  // pending answer of the claim before it, which was applied (Bun's known lack of async pipelining).
  {
    name: "body longer than Content-Length",
    bytes: claim(
      "HTTP/1.1",
      "m16",
      ["Host: localhost"],
      `${claimBody("long")}GARBAGE\r\n\r\n`,
      claimBody("long").length,
    ),
    status: 400,
    logged: "m16",
  },
  // Refused by Bun's own parser before the app: nothing to log, but nothing may break either.
  {
    name: "HTTP/1.1 without Host",
    bytes: request("GET /health/live HTTP/1.1", "b1", ["Connection: close"]),
    status: 400,
  },
  { name: "absurd request line", bytes: "\x00\x01\x02 HELLO \xff\xfe\r\n\r\n", status: 400 },
  { name: "request line with no target", bytes: "GET\r\n\r\n", status: 400 },
  { name: "HTTP/2 preface", bytes: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", status: 400 },
  { name: "unknown HTTP version", bytes: request("GET /health/live HTTP/9.9", "b2", ["Host: localhost"]), status: 505 },
  {
    name: "500 header fields",
    bytes: request("GET /health/live HTTP/1.1", "b3", [
      "Host: localhost",
      ...Array.from({ length: 500 }, (_, i) => `X-${i}: v`),
    ]),
    status: 431,
  },
  {
    name: "a 64 KiB URL",
    bytes: request(`GET /${"a".repeat(65536)} HTTP/1.1`, "b4", ["Host: localhost"]),
    status: 431,
  },
  {
    name: "Content-Length and chunked",
    bytes: request(
      "POST /api/coupons/claim HTTP/1.1",
      "b5",
      ["Host: localhost", "Content-Length: 3", "Transfer-Encoding: chunked"],
      "0\r\n\r\n",
    ),
    status: 400,
  },
  {
    name: "non-numeric Content-Length",
    bytes: request("POST /api/coupons/claim HTTP/1.1", "b6", ["Host: localhost", "Content-Length: ten"]),
    status: 400,
  },
  { name: "unknown method", bytes: request("BREW /health/live HTTP/1.1", "b7", ["Host: localhost"]) },
];

describe("malformed requests against the running service", () => {
  const answers = new Map<string, RawAnswer>();
  beforeAll(async () => {
    for (const c of cases) answers.set(c.name, await sendRaw(service.port, c.bytes, c.waitMs));
  }, 60_000);

  it("leave the process running", () => {
    expect(service.child.exitCode).toBeNull();
  });

  it.each(cases.map((c) => [c.name, c] as const))("answer %s truthfully", (_, c) => {
    const answer = answers.get(c.name) as RawAnswer;
    expect(answer.status).toBe(c.status);
    if (c.code) expect(answer.text).toContain(`"code":"${c.code}"`);
    if (c.code) expect(answer.text).toContain("application/problem+json");
  });

  it("log one request line for each that reached the app", async () => {
    await Bun.sleep(200); // the log line is written after the answer
    const logged = service.logs().filter((l) => l.msg === "request");
    for (const c of cases.filter((c) => c.logged)) {
      expect({ case: c.name, lines: logged.filter((l) => l.request_id === c.logged).length }).toEqual({
        case: c.name,
        lines: 1,
      });
    }
    expect(logged.find((l) => l.request_id === "m7")).toMatchObject({
      route: "unmatched",
      path: "/xxxxxxxxxx/health/live",
      status: 404,
    });
  });

  it("still answers a normal claim, and applied exactly the claims it acknowledged", async () => {
    expect((await service.api.claim("after-the-battery", "EDGE")).status).toBe(201);
    const rows = await database.sql`select user_id from claims where coupon_name = 'EDGE' order by id`;
    expect(rows.map((r) => r.user_id)).toEqual(["no-host", "long", "after-the-battery"]);
  });
});
