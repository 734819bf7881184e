// The JSON body parser for every write: JSON only (415 otherwise), at most 1 MiB (413), malformed
// JSON is a validation failure, and so is any JSON that is not an object (every body here is one;
// checked here because Elysia would silently turn an array or null into {} before validating).
import { AppError } from "../errors";

export const MAX_BODY_BYTES = 1024 * 1024;
// No body of this API nests beyond 2 levels; deeper ones are abuse, and some validators and error
// formatters recurse through them until the stack overflows.
export const MAX_JSON_DEPTH = 32;

const tooLarge = () => new AppError("PAYLOAD_TOO_LARGE", `The request body exceeds ${MAX_BODY_BYTES} bytes.`);

/** Parses a request body as JSON under the rules above. */
export async function readJsonBody(request: Request): Promise<unknown> {
  const type = request.headers.get("content-type")?.split(";")[0]?.trim().toLowerCase();
  if (type !== "application/json") {
    throw new AppError("UNSUPPORTED_MEDIA_TYPE", "Send the body as JSON with Content-Type: application/json.");
  }
  const text = await readText(request);
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new AppError("VALIDATION_FAILED", "body: the request body is not valid JSON.");
  }
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new AppError("VALIDATION_FAILED", "body: expected a JSON object.");
  }
  if (nestingDepth(text) > MAX_JSON_DEPTH) {
    throw new AppError("VALIDATION_FAILED", `body: JSON nested deeper than ${MAX_JSON_DEPTH} levels.`);
  }
  return body;
}

/** The body as text, refusing more than MAX_BODY_BYTES. */
async function readText(request: Request): Promise<string> {
  const declared = request.headers.get("content-length");
  if (declared !== null) {
    // HTTP framing stops the body at its declared length, so one read is bounded (and far faster
    // than iterating the stream, which dominated the cost of a small request).
    if (Number(declared) > MAX_BODY_BYTES) throw tooLarge();
    return request.text();
  }
  // Chunked: count while reading, so an endless body cannot fill memory.
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (request.body) {
    for await (const chunk of request.body) {
      size += chunk.byteLength;
      if (size > MAX_BODY_BYTES) throw tooLarge();
      chunks.push(chunk);
    }
  }
  return Buffer.concat(chunks, size).toString("utf8");
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
