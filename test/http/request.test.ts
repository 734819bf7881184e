import { describe, expect, it } from "bun:test";
import type { AppError } from "../../src/domain/errors";
import { checkPercentEncoding, isOriginlessFallback, requestPath, withOrigin } from "../../src/http/request";

describe("requestPath", () => {
  it("reads the path of an absolute URL, whatever the host's length", () => {
    expect(requestPath("http://localhost:3000/api/coupons/claim")).toBe("/api/coupons/claim");
    expect(requestPath("http://ab/xxx/health/live")).toBe("/xxx/health/live");
    expect(requestPath("http://[::1/health/live")).toBe("/health/live"); // Bun lets this Host through
  });

  it("reads the path Bun hands over without an origin (no or unusable Host)", () => {
    expect(requestPath("/health/live")).toBe("/health/live");
    expect(requestPath("/a/../b")).toBe("/a/../b");
  });

  it("leaves out the query and the fragment", () => {
    expect(requestPath("http://x/api/coupons/A?x=/y#z")).toBe("/api/coupons/A");
    expect(requestPath("/a#frag?not-a-query")).toBe("/a");
    expect(requestPath("/a?q#f")).toBe("/a");
  });

  it("never throws, even on strings no URL parser accepts", () => {
    for (const url of ["", "http://", "http://:80", "%", "?", "#"]) expect(typeof requestPath(url)).toBe("string");
  });
});

describe("checkPercentEncoding", () => {
  const codeOf = (path: string) => {
    try {
      checkPercentEncoding(path);
      return "ok";
    } catch (error) {
      return (error as AppError).code;
    }
  };

  it("accepts plain paths and percent-encoded UTF-8", () => {
    expect(codeOf("/api/coupons/BLACK_FRIDAY")).toBe("ok");
    expect(codeOf("/api/coupons/Summer%20Sale%20%C3%A9t%C3%A9")).toBe("ok");
    expect(codeOf("/api/coupons/%F0%9F%8E%9F")).toBe("ok");
  });

  it("refuses with VALIDATION_FAILED what Bun would silently turn into U+FFFD", () => {
    for (const path of [
      "/api/coupons/%ZZ",
      "/api/coupons/%E0%A4%A",
      "/api/coupons/%",
      "/api/coupons/%C0%AF",
      "/x/%ED%A0%80",
    ]) {
      expect({ path, code: codeOf(path) }).toEqual({ path, code: "VALIDATION_FAILED" });
    }
  });
});

describe("isOriginlessFallback and withOrigin", () => {
  // What Bun hands over for `GET /a/../b HTTP/1.0` without Host: a URL without origin, the path unnormalised.
  const originless = (method: string, body: string | null, params?: Record<string, string>) => {
    const real = new Request("http://x/", { method, body, headers: { "x-request-id": "r1" } });
    const { headers, body: stream, signal } = real;
    return { url: "/a/../b?q=1", method, headers, body: stream, signal, params } as unknown as Request;
  };

  it("spots a request without origin that Bun's route table did not match", () => {
    expect(isOriginlessFallback(originless("GET", null))).toBe(true);
    expect(isOriginlessFallback(originless("GET", null, {}))).toBe(false); // matched: Bun set params
    expect(isOriginlessFallback(new Request("http://ab/xxx/health/live"))).toBe(false);
  });

  it("rebuilds it with a placeholder origin, the path normalised and the body kept", async () => {
    const get = withOrigin(originless("GET", null));
    expect([get.url, get.method, get.headers.get("x-request-id")]).toEqual(["http://host.invalid/b?q=1", "GET", "r1"]);
    const post = withOrigin(originless("POST", '{"a":1}'));
    expect([post.method, await post.text()]).toEqual(["POST", '{"a":1}']);
  });
});
