// JSON answers too big to build in memory: an object whose one long array arrives in pages is sent as
// exactly the bytes JSON.stringify would give for the whole object, page by page, as the client reads.
const encoder = new TextEncoder();

/** A long array, one page at a time; when `signal` aborts, the answer is cut off. */
export type JsonPages = AsyncIterable<readonly unknown[]> & { readonly signal?: AbortSignal };

const isPages = (value: unknown): value is JsonPages =>
  typeof value === "object" && value !== null && Symbol.asyncIterator in value;

/**
 * `value` itself (for Elysia to render as usual) when none of its fields is paged; otherwise a 200
 * application/json Response streaming it. The first page is read before answering, so an early
 * failure is still a problem response; a later one aborts the connection (the chunked body never
 * ends), because a client must never take a cut-off array for the whole one.
 */
export async function jsonAnswer<T extends object>(
  value: T,
  onError?: (error: unknown) => void,
): Promise<T | Response> {
  const pages = Object.values(value).find(isPages);
  if (!pages) return value;
  // The text around the array is JSON.stringify's own, split where it renders a unique placeholder.
  const marker = crypto.randomUUID();
  const text = JSON.stringify(value, (_key, field) => (field === pages ? marker : field));
  const [before, after] = text.split(`"${marker}"`) as [string, string];
  const iterator = pages[Symbol.asyncIterator]();
  let next = await iterator.next();
  let items = 0;
  let finished = false;
  const render = (page: readonly unknown[]) => {
    const json = JSON.stringify(page).slice(1, -1);
    const separator = items > 0 && page.length > 0 ? "," : "";
    items += page.length;
    return separator + json;
  };
  const fail = (controller: ReadableStreamDefaultController<Uint8Array>, error: unknown) => {
    if (finished) return;
    finished = true;
    onError?.(error);
    controller.error(onError ? undefined : error); // undefined: already reported, Bun need not print it
    void iterator.return?.()?.catch(() => {});
  };
  let opened = false;
  return new Response(
    new ReadableStream<Uint8Array>(
      {
        start(controller) {
          pages.signal?.addEventListener("abort", () => fail(controller, pages.signal?.reason), { once: true });
        },
        async pull(controller) {
          try {
            let chunk = opened ? "" : `${before}[`;
            opened = true;
            if (next.done) {
              finished = true;
              controller.enqueue(encoder.encode(`${chunk}]${after}`));
              controller.close();
              return;
            }
            chunk += render(next.value);
            controller.enqueue(encoder.encode(chunk));
            next = await iterator.next();
          } catch (error) {
            fail(controller, error);
          }
        },
        async cancel() {
          finished = true; // the client went away: let the pages free what they hold
          await iterator.return?.()?.catch(() => {});
        },
      },
      { highWaterMark: 0 },
    ),
    { headers: { "content-type": "application/json;charset=utf-8" } },
  );
}
