// The OpenAPI document as served (GET /docs/json): exact request bodies, integers as integers, each
// error with its own examples (which are what the service really answers), one problem schema by
// $ref, the bearer scheme, the headers, and only OpenAPI 3.1 schema keywords.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { claimRejections } from "../../src/coupons/outcomes";
import { errorStatus } from "../../src/errors";
import { MAX_BODY_BYTES } from "../../src/http/body";
import { buildApp } from "../support/app";
import { createTestDatabase, type TestDatabase } from "../support/database";
import { type ApiResponse, type Client, client } from "../support/http";

// JSON Schema 2020-12 (core, applicator, unevaluated, validation, meta-data, format, content) plus the
// OpenAPI 3.1 additions: any other key in a schema is something a tool may not understand.
const SCHEMA_KEYWORDS_3_1 = new Set(
  (
    "$schema $id $ref $anchor $dynamicRef $dynamicAnchor $vocabulary $comment $defs " +
    "allOf anyOf oneOf not if then else dependentSchemas prefixItems items contains properties " +
    "patternProperties additionalProperties propertyNames unevaluatedItems unevaluatedProperties " +
    "type enum const multipleOf maximum exclusiveMaximum minimum exclusiveMinimum maxLength minLength " +
    "pattern maxItems minItems uniqueItems maxContains minContains maxProperties minProperties required " +
    "dependentRequired title description default deprecated readOnly writeOnly examples format " +
    "contentEncoding contentMediaType contentSchema discriminator xml externalDocs example"
  ).split(" "),
);
const SCHEMA_MAPS = new Set(["properties", "patternProperties", "$defs", "dependentSchemas"]);
const SCHEMA_LISTS = new Set(["allOf", "anyOf", "oneOf", "prefixItems"]);
const SCHEMA_VALUES = new Set(["not", "if", "then", "else", "items", "contains", "additionalProperties"]);
const SCHEMA_VALUES_MORE = ["propertyNames", "unevaluatedItems", "unevaluatedProperties", "contentSchema"];
for (const key of SCHEMA_VALUES_MORE) SCHEMA_VALUES.add(key);

type Json = Record<string, any>;

/** "where: key" for every key of `schema` (and its subschemas) outside the 3.1 vocabulary. */
function foreignKeywords(schema: unknown, where: string): string[] {
  if (typeof schema === "boolean") return [];
  if (!schema || typeof schema !== "object" || Array.isArray(schema)) return [`${where}: not a schema`];
  const found: string[] = [];
  for (const [key, value] of Object.entries(schema)) {
    if (!SCHEMA_KEYWORDS_3_1.has(key)) found.push(`${where}: ${key}`);
    else if (SCHEMA_MAPS.has(key))
      for (const [name, child] of Object.entries(value as Json))
        found.push(...foreignKeywords(child, `${where}/${key}/${name}`));
    else if (SCHEMA_LISTS.has(key))
      for (const [i, child] of (value as unknown[]).entries())
        found.push(...foreignKeywords(child, `${where}/${key}/${i}`));
    else if (SCHEMA_VALUES.has(key)) found.push(...foreignKeywords(value, `${where}/${key}`));
  }
  return found;
}

/** Every schema of the document: components.schemas and each `schema` of a media type, parameter or header. */
function schemasOf(node: unknown, where = "#"): [string, unknown][] {
  if (!node || typeof node !== "object") return [];
  const found: [string, unknown][] = [];
  for (const [key, value] of Object.entries(node)) {
    if (key === "examples" || key === "example") continue; // example values are data, not schemas
    const path = `${where}/${key}`;
    if (key === "schema") found.push([path, value]);
    else if (where === "#/components" && key === "schemas")
      for (const [name, schema] of Object.entries(value as Json)) found.push([`${path}/${name}`, schema]);
    else found.push(...schemasOf(value, path));
  }
  return found;
}

const operations = (doc: Json) =>
  Object.entries(doc.paths as Json).flatMap(([path, item]) =>
    Object.entries(item as Json).map(([method, operation]) => ({ path, method, operation: operation as Json })),
  );

let database: TestDatabase;
let api: Client;
let guarded: Client;
let doc: Json;
beforeAll(async () => {
  database = await createTestDatabase();
  api = client(buildApp(database.handle.db).app);
  guarded = client(buildApp(database.handle.db, { adminToken: "s3cret-token-0123456789" }).app);
  doc = (await api.get("/docs/json")).body;
});
afterAll(() => database.drop());

describe("GET /docs/json", () => {
  it("uses only OpenAPI 3.1 schema keywords (no TypeBox or Elysia extras such as `error`)", () => {
    expect(doc.openapi).toStartWith("3.1.");
    const schemas = schemasOf(doc);
    expect(schemas.length).toBeGreaterThan(20);
    expect(schemas.flatMap(([where, schema]) => foreignKeywords(schema, where))).toEqual([]);
  });

  it.each([
    ["/api/coupons", ["name", "amount"], { name: "BLACK_FRIDAY", amount: 100 }],
    ["/api/coupons/claim", ["user_id", "coupon_name"], { user_id: "user-42", coupon_name: "BLACK_FRIDAY" }],
  ])("documents the JSON body of POST %s with its fields and an example", (path, fields, example) => {
    const body = doc.paths[path].post.requestBody;
    expect(body.required).toBe(true);
    expect(Object.keys(body.content)).toEqual(["application/json"]);
    const schema = body.content["application/json"].schema;
    expect(schema.type).toBe("object");
    expect(schema.required).toEqual(fields);
    expect(Object.keys(schema.properties)).toEqual(fields);
    expect(schema.examples).toEqual([example]);
  });

  it("types every integer field as a plain integer, never as an integer-or-string", () => {
    const create = doc.paths["/api/coupons"].post;
    const read = doc.paths["/api/coupons/{name}"].get;
    const integers = [
      create.requestBody.content["application/json"].schema.properties.amount,
      create.responses["201"].content["application/json"].schema.properties.amount,
      create.responses["201"].content["application/json"].schema.properties.remaining_amount,
      read.responses["200"].content["application/json"].schema.properties.amount,
      read.responses["200"].content["application/json"].schema.properties.remaining_amount,
      doc.components.schemas.Problem.properties.status,
    ];
    for (const schema of integers) {
      expect(schema.type).toBe("integer");
      expect(schema.anyOf).toBeUndefined();
    }
  });

  it("defines the problem schema once and refers every problem answer to it", () => {
    const problems = operations(doc).flatMap(({ operation }) =>
      Object.values(operation.responses as Json).flatMap((r) => (r.content?.["application/problem+json"] ? [r] : [])),
    );
    expect(problems.length).toBeGreaterThan(15);
    for (const response of problems) {
      expect(response.content["application/problem+json"].schema).toEqual({ $ref: "#/components/schemas/Problem" });
    }
    expect(doc.components.schemas.Problem.properties.code.enum).toEqual(Object.keys(errorStatus));
    expect(JSON.stringify(doc).split("RFC 9457 problem details").length - 1).toBe(1);
  });

  it("gives each error answer examples whose code and status are that answer's", () => {
    for (const { path, method, operation } of operations(doc)) {
      for (const [status, response] of Object.entries(operation.responses as Json)) {
        if (!response.content?.["application/problem+json"]) continue;
        const examples = Object.values(response.content["application/problem+json"].examples as Json);
        expect(examples.length, `${method} ${path} ${status}`).toBeGreaterThan(0);
        for (const { value } of examples) {
          expect(value.status).toBe(Number(status));
          expect<number>(errorStatus[value.code as keyof typeof errorStatus]).toBe(Number(status));
        }
      }
    }
  });

  it("documents the claim's rejections from the outcome table, already claimed and sold out on 409", () => {
    const responses = doc.paths["/api/coupons/claim"].post.responses;
    const examples = (status: number) => responses[status].content["application/problem+json"].examples;
    expect(Object.keys(examples(409))).toEqual(["already_claimed", "sold_out"]);
    expect(Object.keys(examples(404))).toEqual(["not_found"]);
    for (const [outcome, rejection] of Object.entries(claimRejections)) {
      const value = examples(errorStatus[rejection.code])[outcome].value;
      expect({ code: value.code, detail: value.detail }).toEqual({ code: rejection.code, detail: rejection.detail });
    }
  });

  it("offers the bearer scheme on create only, where it is needed when ADMIN_TOKEN is set", () => {
    expect(doc.components.securitySchemes.adminToken).toMatchObject({ type: "http", scheme: "bearer" });
    for (const { path, method, operation } of operations(doc)) {
      const creates = path === "/api/coupons" && method === "post";
      expect(operation.security).toEqual(creates ? [{}, { adminToken: [] }] : []);
    }
  });

  it("declares X-Request-Id on every answer, Location on a create's 201, Retry-After on every 503 problem", () => {
    const ref = (name: string) => ({ $ref: `#/components/headers/${name}` });
    for (const { operation } of operations(doc)) {
      for (const [status, response] of Object.entries(operation.responses as Json)) {
        expect(response.headers["X-Request-Id"]).toEqual(ref("X-Request-Id"));
        const problem = !!response.content["application/problem+json"];
        expect(response.headers["Retry-After"]).toEqual(problem && status === "503" ? ref("Retry-After") : undefined);
      }
    }
    expect(doc.paths["/api/coupons"].post.responses["201"].headers.Location).toEqual(ref("Location"));
    expect(Object.keys(doc.components.headers).sort()).toEqual([
      "Location",
      "Retry-After",
      "WWW-Authenticate",
      "X-Request-Id",
    ]);
  });
});

describe("the documented examples", () => {
  const examplesOf = (path: string, method: string, status: number) =>
    doc.paths[path][method].responses[status].content["application/problem+json"].examples as Json;
  const json = { "content-type": "application/json" };
  const big = JSON.stringify({ name: "x".repeat(MAX_BODY_BYTES), amount: 1 });

  // Each documented example with the request that provokes it; the rest cannot be provoked here.
  const provoked: Record<string, () => Promise<ApiResponse>> = {
    "get /api/coupons/{name} 404 COUPON_NOT_FOUND": () => api.getCoupon("BLACK_FRIDAY"),
    "get /api/coupons/{name} 400 percentEncoding": () => api.get("/api/coupons/%FF"),
    "post /api/coupons 400 amount": () => api.post("/api/coupons", { name: "TEN", amount: "10" }),
    "post /api/coupons 400 malformedJson": () => api.call("POST", "/api/coupons", { body: "{", headers: json }),
    "post /api/coupons 401 UNAUTHORIZED": () => guarded.createCoupon("GUARDED", 1),
    "post /api/coupons 403 FORBIDDEN": () => guarded.createCoupon("GUARDED", 1, { authorization: "Bearer wrong" }),
    "post /api/coupons 409 COUPON_EXISTS": async () => {
      await api.createCoupon("BLACK_FRIDAY", 1);
      return api.createCoupon("BLACK_FRIDAY", 1);
    },
    "post /api/coupons 413 tooLarge": () => api.call("POST", "/api/coupons", { body: big, headers: json }),
    "post /api/coupons 415 notJson": () =>
      api.call("POST", "/api/coupons", { body: "{}", headers: { "content-type": "text/plain" } }),
    "post /api/coupons/claim 400 user_id": () => api.claim("", "BLACK_FRIDAY"),
    "post /api/coupons/claim 400 malformedJson": () =>
      api.call("POST", "/api/coupons/claim", { body: "{", headers: json }),
    "post /api/coupons/claim 404 not_found": () => api.claim("user-42", "NO_SUCH_COUPON"),
    "post /api/coupons/claim 409 already_claimed": async () => {
      await api.claim("user-42", "BLACK_FRIDAY");
      return api.claim("user-42", "BLACK_FRIDAY");
    },
    "post /api/coupons/claim 409 sold_out": () => api.claim("user-43", "BLACK_FRIDAY"),
    "post /api/coupons/claim 413 tooLarge": () => api.call("POST", "/api/coupons/claim", { body: big, headers: json }),
    "post /api/coupons/claim 415 notJson": () => api.call("POST", "/api/coupons/claim", { body: "{}" }),
  };

  it("are byte for byte what the service answers (but the request id, and the path where it must differ)", async () => {
    for (const [key, provoke] of Object.entries(provoked)) {
      const [method, path, status, name] = key.split(" ") as [string, string, string, string];
      const example = examplesOf(path, method, Number(status))[name];
      expect(example, key).toBeDefined();
      const res = await provoke();
      expect(res.headers.get("content-type"), key).toBe("application/problem+json");
      expect(res.headers.get("x-request-id"), key).toBe(res.body.request_id);
      const { request_id: _, ...expected } = example.value;
      if (key.includes("percentEncoding")) expected.instance = "/api/coupons/%FF";
      const { request_id: __, ...answered } = res.body;
      expect(JSON.stringify(answered), key).toBe(JSON.stringify(expected));
    }
  });

  it("leave out only answers a healthy service cannot be made to give: 500 and 503", () => {
    const documented = operations(doc).flatMap(({ path, method, operation }) =>
      Object.entries(operation.responses as Json).flatMap(([status, response]) =>
        Object.keys(response.content["application/problem+json"]?.examples ?? {}).map(
          (name) => `${method} ${path} ${status} ${name}`,
        ),
      ),
    );
    const unprovoked = documented.filter((key) => !(key in provoked));
    expect(unprovoked.filter((key) => !/ (500|503) /.test(key))).toEqual([]);
    expect(Object.keys(provoked).filter((key) => !documented.includes(key))).toEqual([]);
  });

  it("include the request bodies, which the service accepts as they are", async () => {
    const create = doc.paths["/api/coupons"].post.requestBody.content["application/json"].schema.examples[0];
    const claim = doc.paths["/api/coupons/claim"].post.requestBody.content["application/json"].schema.examples[0];
    const created = await api.post("/api/coupons", { ...create, name: "EXAMPLE_BODY" });
    expect(created.status).toBe(201);
    expect(created.headers.get("location")).toBe("/api/coupons/EXAMPLE_BODY");
    expect((await api.post("/api/coupons/claim", { ...claim, coupon_name: "EXAMPLE_BODY" })).status).toBe(201);
  });
});
