// jsonAnswer: the bytes of JSON.stringify for an object whose array arrives in pages, and a cut-off
// connection (never a complete-looking body) when the pages fail after the answer has begun.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { connect } from "node:net";
import { type JsonPages, jsonAnswer } from "../../src/http/json-stream";

/** Pages that yield `pages`, then fail with `failure` if given; `closed` is set once cleaned up. */
function pagesOf(pages: unknown[][], failure?: Error, signal?: AbortSignal) {
  const state = { closed: false, pulled: 0 };
  const iterable: JsonPages = {
    signal,
    async *[Symbol.asyncIterator]() {
      try {
        for (const page of pages) {
          if (state.pulled++ > 0) await Bun.sleep(5); // a database round trip
          yield page;
        }
        if (failure) throw failure;
        if (signal) await new Promise(() => {}); // a source that stalls until the signal ends the answer
      } finally {
        state.closed = true;
      }
    },
  };
  return { iterable, state };
}

/** The raw bytes a client receives for GET `path`, read until the server closes the connection. */
function rawGet(port: number, path: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    let data = "";
    socket.on("data", (chunk) => {
      data += chunk;
    });
    socket.on("close", () => resolve(data));
    socket.on("error", () => {});
    socket.write(`GET ${path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n`);
  });
}

describe("jsonAnswer", () => {
  it("returns an object with nothing paged as it is, for Elysia to render", async () => {
    const value = { name: "x", list: ["a"] };
    expect(await jsonAnswer(value)).toBe(value);
  });

  it("streams exactly JSON.stringify of the whole object, wherever the paged field is and however pages fall", async () => {
    const items = ['q"uote', "back\\slash", "😀", "\u2028\u2029", "\u0001", "plain", "", "]}"];
    const pages = [[], items.slice(0, 3), [], items.slice(3, 4), items.slice(4), []];
    const value = { name: "n\u2028", list: pagesOf(pages).iterable, after: 3, skipped: undefined };
    const response = (await jsonAnswer(value)) as Response;
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe("application/json;charset=utf-8");
    expect(await response.text()).toBe(JSON.stringify({ name: "n\u2028", list: items, after: 3 }));
    expect(await ((await jsonAnswer({ list: pagesOf([]).iterable })) as Response).text()).toBe('{"list":[]}');
  });

  it("throws a failure of the first page, so it is still answered as a problem", async () => {
    const { iterable, state } = pagesOf([], new Error("database down"));
    await expect(jsonAnswer({ list: iterable })).rejects.toThrow("database down");
    expect(state.closed).toBe(true);
  });

  it("reads a page only when the client has taken the previous one", async () => {
    const { iterable, state } = pagesOf([["a"], ["b"], ["c"], ["d"]]);
    const response = (await jsonAnswer({ list: iterable })) as Response;
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    expect(state.pulled).toBeLessThanOrEqual(2);
    await reader.cancel();
    expect(state.closed).toBe(true);
  });

  describe("over HTTP", () => {
    let server: ReturnType<typeof Bun.serve>;
    const errors: unknown[] = [];
    beforeAll(() => {
      server = Bun.serve({
        hostname: "127.0.0.1",
        port: 0,
        fetch(request) {
          const path = new URL(request.url).pathname;
          const page = Array.from({ length: 1000 }, (_, i) => `user-${i}`);
          if (path === "/fails") {
            const { iterable } = pagesOf([page, page], new Error("connection lost"));
            return jsonAnswer({ name: "x", list: iterable }, (error) => errors.push(error)) as Promise<Response>;
          }
          const { iterable } = pagesOf([page], undefined, AbortSignal.timeout(200));
          return jsonAnswer({ name: "x", list: iterable }, (error) => errors.push(error)) as Promise<Response>;
        },
      });
    });
    afterAll(() => server.stop(true));

    it.each(["/fails", "/times-out"])(
      "cuts off the connection mid-body on %s: no closing chunk, no complete JSON",
      async (path) => {
        const raw = await rawGet(server.port as number, path);
        const [head, body] = raw.split("\r\n\r\n", 2) as [string, string];
        expect(head).toStartWith("HTTP/1.1 200 OK");
        expect(head.toLowerCase()).toContain("transfer-encoding: chunked");
        expect(body.length).toBeGreaterThan(1000);
        expect(raw).not.toEndWith("0\r\n\r\n");
        expect(raw).not.toContain("]}");
        expect(errors.length).toBeGreaterThan(0);
        await expect(fetch(`http://127.0.0.1:${server.port}${path}`).then((r) => r.text())).rejects.toThrow();
      },
    );
  });
});
