// What Bun hands over as a request's URL, read with string slices: `new URL()` costs on every request
// and throws on what Bun lets through. Bun gives "http://host/path?query", or only "/path?query" when
// the Host header is missing, empty or unusable (HTTP/1.0 health checks, `Host: a b`), and then leaves
// the path exactly as sent (no dot-segment or percent normalisation).
import { AppError } from "../domain/errors";

/** The path of a request URL as Bun builds it, without query or fragment. */
export function requestPath(url: string): string {
  const start = url.charCodeAt(0) === 47 ? 0 : url.indexOf("/", url.indexOf("//") + 2);
  if (start === -1) return "/";
  let end = url.indexOf("?", start);
  const hash = url.indexOf("#", start);
  if (end === -1 || (hash !== -1 && hash < end)) end = hash;
  return end === -1 ? url.slice(start) : url.slice(start, end);
}

/** Refuses a path whose percent-encoding is not UTF-8 (`%ZZ`, `%E0%A4%A`): Bun would decode it to U+FFFD. */
export function checkPercentEncoding(path: string): void {
  if (!path.includes("%")) return;
  try {
    decodeURIComponent(path);
  } catch {
    throw new AppError("VALIDATION_FAILED", "path: invalid percent-encoding (expected UTF-8, e.g. %C3%A9).");
  }
}

/**
 * Whether Elysia's own router is about to misread this request: Bun's route table matched nothing
 * (a matched request carries `params`), and the URL has no origin, so the path Elysia slices from a
 * fixed offset is wrong (`/xxxxxxxxxx/health/live` would be served as `/health/live`).
 */
export function isOriginlessFallback(request: Request): boolean {
  return request.url.charCodeAt(0) === 47 && (request as { params?: unknown }).params === undefined;
}

/** The same request with a placeholder origin, which also normalises its path as a Host would have. */
export function withOrigin(request: Request): Request {
  const bodyless = request.method === "GET" || request.method === "HEAD";
  return new Request(`http://host.invalid${request.url}`, {
    method: request.method,
    headers: request.headers,
    body: bodyless ? null : request.body,
    signal: request.signal,
  });
}
