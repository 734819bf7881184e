// An OTLP/HTTP trace receiver for the tests, speaking both encodings the service can export:
// http/protobuf (read with the small wire-format decoder below, enough for the fields the tests look
// at) and http/json. Either way the spans come out in the JSON encoding's shape.

export interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  links?: { traceId: string; spanId: string }[];
  attributes?: { key: string; value: Record<string, unknown> }[];
  status?: { code?: number };
}

interface ResourceSpans {
  resource: { attributes: { key: string; value: { stringValue?: string } }[] };
  scopeSpans: { spans: OtlpSpan[] }[];
}

/** Keeps every span it is sent, with its resource's service.name, and the content type of each export. */
export function otlpReceiver() {
  const spans: (OtlpSpan & { service: string })[] = [];
  const contentTypes: string[] = [];
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(request) {
      if (new URL(request.url).pathname !== "/v1/traces") return new Response("no", { status: 404 });
      const type = request.headers.get("content-type") ?? "";
      contentTypes.push(type);
      const body =
        type === "application/x-protobuf"
          ? decodeExport(new Uint8Array(await request.arrayBuffer()))
          : ((await request.json()) as { resourceSpans: ResourceSpans[] });
      for (const resourceSpans of body.resourceSpans) {
        const service = resourceSpans.resource.attributes.find((a) => a.key === "service.name")?.value.stringValue;
        for (const scope of resourceSpans.scopeSpans)
          for (const span of scope.spans) spans.push({ ...span, service: service ?? "" });
      }
      return type === "application/x-protobuf" ? new Response(new Uint8Array(0)) : Response.json({});
    },
  });
  return { url: `http://127.0.0.1:${server.port}`, spans, contentTypes, stop: () => server.stop(true) };
}

/** The value of a span's attribute, whatever its type. */
export const attribute = (span: OtlpSpan, key: string) => {
  const value = span.attributes?.find((a) => a.key === key)?.value;
  return value ? Object.values(value)[0] : undefined;
};

type Field = bigint | Uint8Array;

/** A protobuf message's fields by number, in order (varints as bigint, everything else as bytes). */
function fieldsOf(bytes: Uint8Array): Map<number, Field[]> {
  const fields = new Map<number, Field[]>();
  let at = 0;
  const varint = () => {
    let value = 0n;
    for (let shift = 0n; ; shift += 7n) {
      const byte = bytes[at++];
      if (byte === undefined) throw new Error("truncated protobuf varint");
      value |= BigInt(byte & 0x7f) << shift;
      if (byte < 0x80) return value;
    }
  };
  const take = (length: number) => {
    if (at + length > bytes.length) throw new Error("truncated protobuf field");
    at += length;
    return bytes.subarray(at - length, at);
  };
  while (at < bytes.length) {
    const tag = Number(varint());
    const wireType = tag & 7;
    const value =
      wireType === 0
        ? varint()
        : wireType === 1
          ? take(8)
          : wireType === 2
            ? take(Number(varint()))
            : wireType === 5
              ? take(4)
              : undefined;
    if (value === undefined) throw new Error(`unexpected protobuf wire type ${wireType}`);
    const number = tag >>> 3;
    fields.set(number, [...(fields.get(number) ?? []), value]);
  }
  return fields;
}

const messages = (fields: Map<number, Field[]>, number: number) =>
  (fields.get(number) ?? []).map((value) => fieldsOf(value as Uint8Array));
const bytesOf = (fields: Map<number, Field[]>, number: number) => fields.get(number)?.[0] as Uint8Array | undefined;
const text = (fields: Map<number, Field[]>, number: number) =>
  new TextDecoder().decode(bytesOf(fields, number) ?? new Uint8Array(0));
const hex = (bytes: Uint8Array | undefined) =>
  bytes && bytes.length > 0 ? Buffer.from(bytes).toString("hex") : undefined;
const int = (fields: Map<number, Field[]>, number: number) => {
  const value = fields.get(number)?.[0];
  return typeof value === "bigint" ? Number(BigInt.asIntN(64, value)) : undefined;
};

/** opentelemetry.proto.common.v1.KeyValue, its AnyValue as the JSON encoding writes it. */
function keyValue(fields: Map<number, Field[]>) {
  const [value] = messages(fields, 2);
  const any: Record<string, unknown> = {};
  if (value?.has(1)) any.stringValue = text(value, 1);
  if (value?.has(2)) any.boolValue = int(value, 2) === 1;
  if (value?.has(3)) any.intValue = int(value, 3);
  if (value?.has(4)) any.doubleValue = Buffer.from(bytesOf(value, 4) as Uint8Array).readDoubleLE(0);
  return { key: text(fields, 1), value: any };
}

/** opentelemetry.proto.trace.v1.Span. */
function span(fields: Map<number, Field[]>): OtlpSpan {
  const [status] = messages(fields, 15);
  return {
    traceId: hex(bytesOf(fields, 1)) ?? "",
    spanId: hex(bytesOf(fields, 2)) ?? "",
    parentSpanId: hex(bytesOf(fields, 4)),
    name: text(fields, 5),
    kind: int(fields, 6) ?? 0,
    attributes: messages(fields, 9).map(keyValue),
    links: messages(fields, 13).map((link) => ({
      traceId: hex(bytesOf(link, 1)) ?? "",
      spanId: hex(bytesOf(link, 2)) ?? "",
    })),
    status: status ? { code: int(status, 3) } : undefined,
  };
}

/** opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest. */
function decodeExport(bytes: Uint8Array): { resourceSpans: ResourceSpans[] } {
  return {
    resourceSpans: messages(fieldsOf(bytes), 1).map((resourceSpans) => ({
      resource: {
        attributes: messages(messages(resourceSpans, 1)[0] ?? new Map(), 1).map(keyValue) as {
          key: string;
          value: { stringValue?: string };
        }[],
      },
      scopeSpans: messages(resourceSpans, 2).map((scope) => ({ spans: messages(scope, 2).map(span) })),
    })),
  };
}
