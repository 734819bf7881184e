// The HTTP edge against a real PostgreSQL: bodies bounded per request and in total, strict UTF-8 and
// percent-encoding, docs assets, and connections closed once the server stops accepting.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { MAX_BODY_BYTES } from "../../src/http/body";
import { buildApp, listen, serveForSuite } from "../support/app";
import { createTestDatabase, type TestDatabase } from "../support/database";
import { type ApiResponse, type Client, client } from "../support/http";
import { sendRaw } from "../support/service";

let database: TestDatabase;
let api: Client;
beforeAll(async () => {
  database = await createTestDatabase();
  api = client(buildApp(database.handle.db).app);
  expect((await api.createCoupon("EDGE", 1000)).status).toBe(201);
});
afterAll(() => database.drop());

const expectProblem = (res: ApiResponse, status: number, code: string) => {
  expect([res.status, res.headers.get("content-type"), res.body.code]).toEqual([
    status,
    "application/problem+json",
    code,
  ]);
};
const claimsBy = async (user: string) =>
  (await database.sql`select count(*)::int as n from claims where user_id = ${user}`)[0]?.n;

describe("request bodies", () => {
  it("answers a claim whose user_id is 100 KB with PAYLOAD_TOO_LARGE (413), before validating it", async () => {
    const res = await api.post("/api/coupons/claim", { user_id: "u".repeat(100_000), coupon_name: "EDGE" });
    expectProblem(res, 413, "PAYLOAD_TOO_LARGE");
    expect(res.body.detail).toBe(`The request body exceeds ${MAX_BODY_BYTES} bytes.`);
  });

  it("refuses invalid UTF-8 with VALIDATION_FAILED (400) and stores nothing, instead of storing U+FFFD", async () => {
    const body = new Uint8Array([...Buffer.from('{"user_id":"bad'), 0xff, ...Buffer.from('","coupon_name":"EDGE"}')]);
    const res = await buildApp(database.handle.db).app.handle(
      new Request("http://localhost/api/coupons/claim", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
      }),
    );
    expect([res.status, ((await res.json()) as { detail: string }).detail]).toEqual([
      400,
      "body: the request body is not valid UTF-8.",
    ]);
    expect(await claimsBy("bad\ufffd")).toBe(0);
  });

  it("answers SERVICE_UNAVAILABLE (503) with Retry-After once the bodies in flight reach the budget, and frees an aborted one", async () => {
    const server = listen(buildApp(database.handle.db, { bodyBytesInFlightMax: 1000 }).app);
    const port = Number(new URL(server.baseUrl).port);
    const other = client(server.baseUrl);
    try {
      // A client that declares 990 bytes, sends 10 and stalls, holding 990 of the 1000.
      const stalled = sendRaw(
        port,
        "POST /api/coupons/claim HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 990\r\n\r\n0123456789",
        300,
      );
      await Bun.sleep(100);
      const refused = await other.claim("over-budget", "EDGE");
      expectProblem(refused, 503, "SERVICE_UNAVAILABLE");
      expect(refused.headers.get("retry-after")).toBe("1");
      expect(await claimsBy("over-budget")).toBe(0);
      await stalled; // the client gives up and closes: its 990 bytes are released
      await Bun.sleep(100);
      expect((await other.claim("after-abort", "EDGE")).status).toBe(201);
    } finally {
      await server.stop();
    }
  });
});

describe("paths, over real HTTP (Bun's route table decodes names, unlike app.handle)", () => {
  const http = serveForSuite(() => database.handle.db);

  it.each(["/api/coupons/%ZZ", "/api/coupons/%E0%A4%A", "/api/coupons/%C0%AF"])(
    "answers GET %s with VALIDATION_FAILED (400), not a lookup of U+FFFD",
    async (path) => {
      const res = await http.api.get(path);
      expectProblem(res, 400, "VALIDATION_FAILED");
      expect(res.body.instance).toBe(path);
    },
  );

  it("still reads a percent-encoded UTF-8 name", async () => {
    expect((await api.createCoupon("été", 1)).status).toBe(201);
    expect((await http.api.get("/api/coupons/%C3%A9t%C3%A9")).body.name).toBe("été");
  });

  it.each(["constructor", "toString", "__proto__", "hasOwnProperty", "valueOf", "other.js"])(
    "answers /docs/assets/%s with NOT_FOUND (404)",
    async (file) => {
      expectProblem(await http.api.get(`/docs/assets/${file}`), 404, "NOT_FOUND");
    },
  );
});

describe("an error that escapes Elysia", () => {
  it("is answered by Bun's error option as an INTERNAL_ERROR problem, not Bun's HTML page with the source", async () => {
    const serve = buildApp(database.handle.db).app.config.serve as { error?: (error: Error) => Response };
    const res = serve.error?.(new Error("escaped")) as Response;
    expect([res.status, res.headers.get("content-type")]).toEqual([500, "application/problem+json"]);
    expect(((await res.json()) as { code: string }).code).toBe("INTERNAL_ERROR");
  });
});

describe("once the server stops accepting (shutdown)", () => {
  const draining = () => client(buildApp(database.handle.db, { isClosing: () => true }).app);

  it("says Connection: close on successes, problems and claim rejections alike", async () => {
    const api = draining();
    expect((await api.claim("drain-1", "EDGE")).headers.get("connection")).toBe("close");
    expect((await api.claim("drain-1", "EDGE")).headers.get("connection")).toBe("close"); // ALREADY_CLAIMED
    expect((await api.get("/api/coupons/none")).headers.get("connection")).toBe("close");
    expect((await api.get("/nowhere")).headers.get("connection")).toBe("close");
    expect((await api.get("/health/ready")).headers.get("connection")).toBe("close");
  });

  it("closes a keep-alive connection after its answer, and keeps it open otherwise", async () => {
    const request = "GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n";
    for (const isClosing of [true, false]) {
      const server = listen(buildApp(database.handle.db, { isClosing: () => isClosing }).app);
      try {
        const answer = await sendRaw(Number(new URL(server.baseUrl).port), request, 500);
        expect([answer.status, answer.closedByServer]).toEqual([200, isClosing]);
      } finally {
        await server.stop();
      }
    }
  });
});
