import { describe, expect, it } from "bun:test";
import { AppError } from "../../src/domain/errors";
import { createBodyBudget, MAX_BODY_BYTES, MAX_JSON_DEPTH, nestingDepth, readJsonBody } from "../../src/http/body";

const post = (body: RequestInit["body"], type = "application/json", headers: Record<string, string> = {}) =>
  new Request("http://localhost/", { method: "POST", body, headers: { "content-type": type, ...headers } });

const codeOf = async (promise: Promise<unknown>) => {
  try {
    await promise;
    return "no error";
  } catch (error) {
    return error instanceof AppError ? error.code : String(error);
  }
};

describe("nestingDepth", () => {
  it("counts arrays and objects, ignoring brackets inside strings and escapes", () => {
    expect(nestingDepth('{"a":[1,{"b":2}]}')).toBe(3);
    expect(nestingDepth('{"a":"[[[{{{\\"]]]"}')).toBe(1);
    expect(nestingDepth("5")).toBe(0);
  });
});

describe("readJsonBody", () => {
  it("parses a JSON object, with or without a charset", async () => {
    expect(await readJsonBody(post('{"a":1}'))).toEqual({ a: 1 });
    expect(await readJsonBody(post('{"a":1}', "application/json; charset=utf-8"))).toEqual({ a: 1 });
  });

  it("rejects other content types with UNSUPPORTED_MEDIA_TYPE", async () => {
    expect(await codeOf(readJsonBody(post('{"a":1}', "text/plain")))).toBe("UNSUPPORTED_MEDIA_TYPE");
    expect(await codeOf(readJsonBody(new Request("http://localhost/", { method: "POST", body: "{}" })))).toBe(
      "UNSUPPORTED_MEDIA_TYPE",
    );
  });

  it("rejects malformed JSON and non-object JSON with VALIDATION_FAILED", async () => {
    for (const body of ["{", "", "[1]", "null", '"s"', "42"]) {
      expect(await codeOf(readJsonBody(post(body)))).toBe("VALIDATION_FAILED");
    }
  });

  it("rejects JSON nested deeper than the limit, and accepts it at the limit", async () => {
    const nested = (depth: number) => `{"a":${"[".repeat(depth - 1)}1${"]".repeat(depth - 1)}}`;
    expect(nestingDepth(nested(MAX_JSON_DEPTH))).toBe(MAX_JSON_DEPTH);
    expect(await codeOf(readJsonBody(post(nested(MAX_JSON_DEPTH + 1))))).toBe("VALIDATION_FAILED");
    let atLimit: unknown = 1;
    for (let depth = 1; depth < MAX_JSON_DEPTH; depth++) atLimit = [atLimit];
    expect(await readJsonBody(post(nested(MAX_JSON_DEPTH)))).toEqual({ a: atLimit });
  });

  it("accepts the largest valid body, every character escaped, pretty-printed", async () => {
    const name = "\\u00e9".repeat(128); // 128 code units written as 6 bytes each
    const text = `{\n    "user_id": "${name}",\n    "coupon_name": "${name}"\n}\n`;
    expect(await readJsonBody(post(text, "application/json", { "content-length": String(text.length) }))).toEqual({
      user_id: "é".repeat(128),
      coupon_name: "é".repeat(128),
    });
  });

  it("rejects a declared length over 8 KiB before reading", async () => {
    expect(MAX_BODY_BYTES).toBe(8192);
    const req = post("{}", "application/json", { "content-length": String(MAX_BODY_BYTES + 1) });
    expect(await codeOf(readJsonBody(req))).toBe("PAYLOAD_TOO_LARGE");
  });

  it("rejects bytes that are not UTF-8 instead of replacing them with U+FFFD", async () => {
    const invalid = new Uint8Array([
      ...new TextEncoder().encode('{"user_id":"a'),
      0xff,
      ...new TextEncoder().encode('"}'),
    ]);
    expect(await codeOf(readJsonBody(post(invalid)))).toBe("VALIDATION_FAILED");
    const lone = new Uint8Array([...new TextEncoder().encode('{"a":"'), 0xed, 0xa0, 0x80, 0x22, 0x7d]); // CESU surrogate
    expect(await codeOf(readJsonBody(post(lone)))).toBe("VALIDATION_FAILED");
  });

  it("rejects a streamed body that grows past 8 KiB without a length", async () => {
    const chunk = new TextEncoder().encode("x".repeat(64 * 1024));
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent++ > 20) controller.close();
        else controller.enqueue(chunk);
      },
    });
    expect(await codeOf(readJsonBody(post(stream)))).toBe("PAYLOAD_TOO_LARGE");
  });
});

describe("readJsonBody with a budget of bytes in flight", () => {
  /** A body whose bytes arrive only when `finish` is called, declared with a Content-Length. */
  const stalled = (text: string) => {
    let finish = () => {};
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        finish = () => {
          controller.enqueue(new TextEncoder().encode(text));
          controller.close();
        };
      },
    });
    const request = post(body, "application/json", { "content-length": String(text.length) });
    return { request, finish: () => finish() };
  };

  it("refuses a body that would take the total over the budget with SERVICE_UNAVAILABLE and Retry-After", async () => {
    const budget = createBodyBudget(100);
    const first = stalled(`{"pad":"${"x".repeat(80)}"}`);
    const reading = readJsonBody(first.request, budget);
    await Bun.sleep(5);
    expect(budget.inFlight).toBe(90);
    const refused = (await readJsonBody(post('{"a":"0123456789"}'), budget).catch((error) => error)) as AppError;
    expect([refused.code, refused.retryAfter]).toEqual(["SERVICE_UNAVAILABLE", 1]);
    first.finish();
    expect(await reading).toEqual({ pad: "x".repeat(80) });
    expect(budget.inFlight).toBe(0);
    expect(await readJsonBody(post('{"a":"0123456789"}'), budget)).toEqual({ a: "0123456789" });
  });

  it("releases the bytes of a body whose reading fails", async () => {
    const budget = createBodyBudget(100);
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        controller.error(new Error("connection reset"));
      },
    });
    expect(await codeOf(readJsonBody(post(body, "application/json", { "content-length": "50" }), budget))).toBe(
      "Error: connection reset",
    );
    expect(budget.inFlight).toBe(0);
  });

  it("counts a chunked body as it arrives and releases it once read", async () => {
    const budget = createBodyBudget(1000);
    const chunk = new TextEncoder().encode(`{"a":"${"x".repeat(600)}"}`);
    const stream = () =>
      new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(chunk);
          controller.close();
        },
      });
    expect(await readJsonBody(post(stream()), budget)).toEqual({ a: "x".repeat(600) });
    expect(budget.inFlight).toBe(0);
    expect(await codeOf(readJsonBody(post(stream()), createBodyBudget(500)))).toBe("SERVICE_UNAVAILABLE");
  });
});
