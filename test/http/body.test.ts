import { describe, expect, it } from "bun:test";
import { AppError } from "../../src/errors";
import { MAX_BODY_BYTES, MAX_JSON_DEPTH, nestingDepth, readJsonBody } from "../../src/http/body";

const post = (
  body: string | ReadableStream<Uint8Array> | null,
  type = "application/json",
  headers: Record<string, string> = {},
) => new Request("http://localhost/", { method: "POST", body, headers: { "content-type": type, ...headers } });

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
    expect(await codeOf(readJsonBody(post(nested(MAX_JSON_DEPTH + 1))))).toBe("VALIDATION_FAILED");
    expect(await readJsonBody(post(nested(MAX_JSON_DEPTH)))).toBeDefined();
  });

  it("rejects a declared length over 1 MiB before reading", async () => {
    const req = post("{}", "application/json", { "content-length": String(MAX_BODY_BYTES + 1) });
    expect(await codeOf(readJsonBody(req))).toBe("PAYLOAD_TOO_LARGE");
  });

  it("rejects a streamed body that grows past 1 MiB without a length", async () => {
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
