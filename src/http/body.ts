// The JSON body parser for every write: JSON only (415 otherwise), at most MAX_BODY_BYTES (413), UTF-8
// only, within a process-wide budget of bytes being read (503), malformed JSON is a validation failure,
// and so is any JSON that is not an object (every body here is one; checked here because Elysia would
// silently turn an array or null into {} before validating).
import { AppError, fail } from "../domain/errors";

// The largest valid body: two names of at most 128 UTF-16 code units, each written at worst as `\uXXXX`
// (6 bytes) = 1,536 bytes, plus keys, quotes, braces and a 10-digit amount (< 60 bytes): under 1.6 KiB.
// 8 KiB leaves 6.5 KiB for whitespace and pretty-printing; anything larger is not a request of this API,
// and refusing it before reading keeps every later check (pattern, nesting) cheap.
export const MAX_BODY_BYTES = 8 * 1024;
// No body of this API nests beyond 2 levels; deeper ones are abuse, and some validators and error
// formatters recurse through them until the stack overflows.
export const MAX_JSON_DEPTH = 32;

/** Bytes of request bodies being read at once, whole process: stalled uploads cannot pile up memory. */
export interface BodyBudget {
  /** Reserves `bytes`; false (and nothing reserved) when that would exceed the budget. */
  take(bytes: number): boolean;
  give(bytes: number): void;
  readonly inFlight: number;
}

/** A budget of `maxBytes` (BODY_BYTES_IN_FLIGHT_MAX). */
export function createBodyBudget(maxBytes: number): BodyBudget {
  let inFlight = 0;
  return {
    take(bytes) {
      if (inFlight + bytes > maxBytes) return false;
      inFlight += bytes;
      return true;
    },
    give(bytes) {
      inFlight -= bytes;
    },
    get inFlight() {
      return inFlight;
    },
  };
}

const unlimited = createBodyBudget(Number.POSITIVE_INFINITY);
// Non-fatal decoding would turn invalid bytes into U+FFFD, so two different bodies could store one name.
const utf8 = new TextDecoder("utf-8", { fatal: true });

/** The refusals of a body, each message written once (the API documentation shows them as they are). */
export const bodyFailures = {
  tooLarge: { code: "PAYLOAD_TOO_LARGE", detail: `The request body exceeds ${MAX_BODY_BYTES} bytes.` },
  notJson: { code: "UNSUPPORTED_MEDIA_TYPE", detail: "Send the body as JSON with Content-Type: application/json." },
  malformedJson: { code: "VALIDATION_FAILED", detail: "body: the request body is not valid JSON." },
  // 503, not 413: the body is acceptable, the process is momentarily full; nothing was applied, so a
  // retry is safe, as with every other overload refusal.
  bodiesInFlight: {
    code: "SERVICE_UNAVAILABLE",
    detail: "Too many request bodies are being received at once; retry shortly.",
  },
} as const;
const tooLarge = () => fail(bodyFailures.tooLarge);
const busy = () => fail(bodyFailures.bodiesInFlight);

/** Parses a request body as JSON under the rules above. */
export async function readJsonBody(request: Request, budget: BodyBudget = unlimited): Promise<unknown> {
  const type = request.headers.get("content-type")?.split(";")[0]?.trim().toLowerCase();
  if (type !== "application/json") {
    throw fail(bodyFailures.notJson);
  }
  const bytes = await readBytes(request, budget);
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    throw new AppError("VALIDATION_FAILED", "body: the request body is not valid UTF-8.");
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw fail(bodyFailures.malformedJson);
  }
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new AppError("VALIDATION_FAILED", "body: expected a JSON object.");
  }
  if (nestingDepth(text) > MAX_JSON_DEPTH) {
    throw new AppError("VALIDATION_FAILED", `body: JSON nested deeper than ${MAX_JSON_DEPTH} levels.`);
  }
  return body;
}

/** The body's bytes, refusing more than MAX_BODY_BYTES and holding them against `budget` while reading. */
async function readBytes(request: Request, budget: BodyBudget): Promise<Uint8Array> {
  const declared = request.headers.get("content-length");
  if (declared !== null) {
    // HTTP framing stops the body at its declared length, so one read is bounded (and far faster
    // than iterating the stream, which dominated the cost of a small request).
    const size = Number(declared);
    if (size > MAX_BODY_BYTES) throw tooLarge();
    if (!budget.take(size)) throw busy();
    try {
      return await request.bytes();
    } finally {
      budget.give(size); // read, or the connection closed: a stalled upload is released when it times out
    }
  }
  // Chunked: count while reading, so an endless body cannot fill memory.
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    if (request.body) {
      for await (const chunk of request.body) {
        if (size + chunk.byteLength > MAX_BODY_BYTES) throw tooLarge();
        if (!budget.take(chunk.byteLength)) throw busy();
        size += chunk.byteLength;
        chunks.push(chunk);
      }
    }
  } finally {
    budget.give(size);
  }
  return Buffer.concat(chunks, size);
}

/** The deepest nesting of arrays and objects in valid JSON text (brackets inside strings ignored). */
export function nestingDepth(json: string): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < json.length; i++) {
    const c = json.charCodeAt(i);
    if (inString) {
      if (c === 92)
        i++; // backslash: skip the escaped character
      else if (c === 34) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 91 || c === 123) deepest = Math.max(deepest, ++depth);
    else if (c === 93 || c === 125) depth--;
  }
  return deepest;
}
