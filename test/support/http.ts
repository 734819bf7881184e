// The one HTTP client helper of the tests: JSON in, status + parsed body + headers out.

export interface ApiResponse<T = any> {
  status: number;
  body: T;
  headers: Headers;
}

type Handler = (request: Request) => Response | Promise<Response>;

/** A client for `target`: a base URL (real HTTP) or an app's handle function (in-process). */
export function client(target: string | { handle: Handler }) {
  const base = typeof target === "string" ? target : "http://localhost";
  const send = (request: Request) => (typeof target === "string" ? fetch(request) : target.handle(request));

  async function call<T = any>(
    method: string,
    path: string,
    init: { json?: unknown; body?: string; headers?: Record<string, string> } = {},
  ): Promise<ApiResponse<T>> {
    const headers: Record<string, string> = { ...init.headers };
    let body = init.body;
    if (init.json !== undefined) {
      headers["content-type"] ??= "application/json";
      body = JSON.stringify(init.json);
    }
    const response = await send(new Request(base + path, { method, headers, body }));
    const text = await response.text();
    let parsed: unknown = text;
    if (/json/.test(response.headers.get("content-type") ?? "")) parsed = JSON.parse(text);
    return { status: response.status, body: parsed as T, headers: response.headers };
  }

  return {
    call,
    get: <T = any>(path: string, headers?: Record<string, string>) => call<T>("GET", path, { headers }),
    post: <T = any>(path: string, json: unknown, headers?: Record<string, string>) =>
      call<T>("POST", path, { json, headers }),
    createCoupon: (name: string, amount: number, headers?: Record<string, string>) =>
      call("POST", "/api/coupons", { json: { name, amount }, headers }),
    claim: (user_id: string, coupon_name: string) =>
      call("POST", "/api/coupons/claim", { json: { user_id, coupon_name } }),
    getCoupon: (name: string) => call("GET", `/api/coupons/${encodeURIComponent(name)}`),
  };
}

export type Client = ReturnType<typeof client>;

/** How many of `results` have `status` (and, if given, the problem `code`). */
export const countStatus = (results: ApiResponse[], status: number, code?: string) =>
  results.filter((r) => r.status === status && (code === undefined || r.body?.code === code)).length;
