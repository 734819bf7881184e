// `coupon-service healthcheck`: probes /health/ready for container health checks (distroless images
// have no curl) and says in one line why it failed, so `docker inspect` shows a reason, not just 1.

export const HEALTHCHECK_TIMEOUT_MS = 3000;

/** GET /health/ready on 127.0.0.1:`port`: undefined when it answers 200, else the reason in one line. */
export async function checkReadiness(port: number, timeoutMs = HEALTHCHECK_TIMEOUT_MS): Promise<string | undefined> {
  const url = `http://127.0.0.1:${port}/health/ready`;
  let response: Response;
  let text: string;
  try {
    response = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    text = await response.text();
  } catch (error) {
    return failureReason(error, port, timeoutMs);
  }
  if (response.status === 200) return undefined;
  return `not ready: ${response.status} ${summary(text)}`;
}

/** The reason a probe got no answer: refused on the port, timed out, or the error's own words. */
function failureReason(error: unknown, port: number, timeoutMs: number): string {
  const { name, code, message } = (error ?? {}) as { name?: string; code?: string; message?: string };
  if (code === "ECONNREFUSED") return `not ready: connection refused on 127.0.0.1:${port} (is the service running?)`;
  if (name === "TimeoutError") return `not ready: no answer from 127.0.0.1:${port} within ${timeoutMs / 1000} s`;
  return `not ready: ${code ?? name ?? "error"}: ${message ?? String(error)}`;
}

/** The readiness body's checks (or the body itself, shortened) as one line of JSON. */
function summary(text: string): string {
  try {
    const body = JSON.parse(text) as { checks?: unknown };
    return JSON.stringify(body.checks ?? body);
  } catch {
    return JSON.stringify(text.slice(0, 200));
  }
}
