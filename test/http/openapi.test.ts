// The OpenAPI document as served (GET /docs/json): exact request bodies and query parameters, integers
// as integers, each error with its own examples (which are what the service really answers), one
// problem schema by $ref, the bearer scheme, the headers (Idempotency-Key among those sent), and only
// OpenAPI 3.1 schema keywords.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { detailOf, rejections } from "../../src/domain/outcomes";
import { MAX_BODY_BYTES } from "../../src/http/body";
import { errorStatus } from "../../src/http/problems";
import { INSTANT_PATTERN } from "../../src/http/schedule";
import { buildApp } from "../support/app";
import { createTestDatabase, type TestDatabase } from "../support/database";
import { type ApiResponse, type Client, client } from "../support/http";
import { until } from "../support/replicas";

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

/** "where: types" for every union of the document that mixes strings with numbers (integer-or-string). */
function stringOrNumberUnions(node: unknown, where = "#"): string[] {
  if (!node || typeof node !== "object") return [];
  const found: string[] = [];
  const record = node as Json;
  const types = [
    ...(Array.isArray(record.type) ? record.type : []),
    ...["anyOf", "oneOf"].flatMap((key) => (Array.isArray(record[key]) ? record[key].map((s: Json) => s?.type) : [])),
  ].flat();
  if (types.includes("string") && (types.includes("integer") || types.includes("number")))
    found.push(`${where}: ${types.join(", ")}`);
  for (const [key, value] of Object.entries(record)) found.push(...stringOrNumberUnions(value, `${where}/${key}`));
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
const patch = (on: Client, name: string, json: unknown, headers?: Record<string, string>) =>
  on.call("PATCH", `/api/coupons/${encodeURIComponent(name)}`, { json, headers });
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
    [
      "/api/coupons",
      ["name", "amount"],
      ["name", "amount", "starts_at", "ends_at"],
      [
        { name: "BLACK_FRIDAY", amount: 100 },
        { name: "CYBER_MONDAY", amount: 500, starts_at: "2026-11-30T09:00:00Z", ends_at: "2026-11-30T21:00:00Z" },
      ],
    ],
    [
      "/api/coupons/claim",
      ["user_id", "coupon_name"],
      ["user_id", "coupon_name"],
      [{ user_id: "user-42", coupon_name: "BLACK_FRIDAY" }],
    ],
  ])("documents the JSON body of POST %s with its fields and examples", (path, required, fields, examples) => {
    const body = doc.paths[path].post.requestBody;
    expect(body.required).toBe(true);
    expect(Object.keys(body.content)).toEqual(["application/json"]);
    const schema = body.content["application/json"].schema;
    expect(schema.type).toBe("object");
    expect(schema.required).toEqual(required);
    expect(Object.keys(schema.properties)).toEqual(fields);
    expect(schema.examples).toEqual(examples);
  });

  it("documents the schedule of a create as optional RFC 3339 strings with an offset", () => {
    const { properties } = doc.paths["/api/coupons"].post.requestBody.content["application/json"].schema;
    for (const field of ["starts_at", "ends_at"]) {
      expect(properties[field]).toMatchObject({ type: "string", pattern: INSTANT_PATTERN });
      expect(properties[field].examples[0]).toMatch(new RegExp(INSTANT_PATTERN));
    }
  });

  it("documents the JSON body of PATCH /api/coupons/{name}: each field optional, bounds nullable, no other field", () => {
    const body = doc.paths["/api/coupons/{name}"].patch.requestBody;
    expect(body.required).toBe(true);
    expect(Object.keys(body.content)).toEqual(["application/json"]);
    const schema = body.content["application/json"].schema;
    expect(schema.type).toBe("object");
    expect(schema.required).toBeUndefined();
    expect(schema.additionalProperties).toBe(false);
    expect(Object.keys(schema.properties)).toEqual(["starts_at", "ends_at", "active"]);
    for (const field of ["starts_at", "ends_at"]) {
      expect(schema.properties[field]).toMatchObject({ type: ["string", "null"], pattern: INSTANT_PATTERN });
    }
    expect(schema.properties.active).toMatchObject({ type: "boolean" });
    expect(schema.examples).toEqual([{ active: false }, { starts_at: "2026-11-27T10:00:00Z", ends_at: null }]);
  });

  it("documents the list's query parameters (limit 1..100, after a coupon name) and the name in the path", () => {
    const list = doc.paths["/api/coupons"].get.parameters as Json[];
    expect(list.map(({ name, in: where, required }) => [name, where, required])).toEqual([
      ["limit", "query", false],
      ["after", "query", false],
    ]);
    const [limit, after] = list.map((parameter) => parameter.schema);
    expect(limit.type).toBe("string");
    const valid = new RegExp(limit.pattern);
    expect(["1", "20", "99", "100"].filter((value) => !valid.test(value))).toEqual([]);
    expect(["0", "101", "01", "5.5", "abc", "-1", ""].filter((value) => valid.test(value))).toEqual([]);
    expect(limit.description).toContain("default 20");
    expect(after).toMatchObject({ type: "string", minLength: 1, maxLength: 128 });
    for (const method of ["get", "patch"]) {
      const params = doc.paths["/api/coupons/{name}"][method].parameters as Json[];
      expect(params.map(({ name, in: where, required }) => [name, where, required])).toEqual([["name", "path", true]]);
    }
  });

  it("documents the sale keys as optional on every coupon answer, and the claimers only on the read", () => {
    const success = (path: string, method: string, status: number) =>
      doc.paths[path][method].responses[status].content["application/json"].schema;
    const page = success("/api/coupons", "get", 200);
    expect(page.required).toEqual(["coupons", "next_after"]);
    const answers = {
      create: success("/api/coupons", "post", 201),
      change: success("/api/coupons/{name}", "patch", 200),
      item: page.properties.coupons.items,
      read: success("/api/coupons/{name}", "get", 200),
    };
    for (const [answer, schema] of Object.entries(answers)) {
      const claimers = answer === "read" ? ["claimed_by"] : [];
      expect(schema.required, answer).toEqual(["name", "amount", "remaining_amount", ...claimers]);
      expect(Object.keys(schema.properties).sort(), answer).toEqual(
        ["name", "amount", "remaining_amount", "starts_at", "ends_at", "active", ...claimers].sort(),
      );
      expect(schema.properties.starts_at, answer).toMatchObject({ type: "string", format: "date-time" });
      expect(schema.properties.ends_at, answer).toMatchObject({ type: "string", format: "date-time" });
      expect(schema.properties.active, answer).toMatchObject({ const: false });
    }
  });

  it("types every integer field as a plain integer, never as an integer-or-string", () => {
    const create = doc.paths["/api/coupons"].post;
    const answers = [
      create.responses["201"],
      doc.paths["/api/coupons/{name}"].get.responses["200"],
      doc.paths["/api/coupons/{name}"].patch.responses["200"],
    ].map((response) => response.content["application/json"].schema);
    const item =
      doc.paths["/api/coupons"].get.responses["200"].content["application/json"].schema.properties.coupons.items;
    const integers = [
      create.requestBody.content["application/json"].schema.properties.amount,
      ...[...answers, item].flatMap((schema) => [schema.properties.amount, schema.properties.remaining_amount]),
      doc.components.schemas.Problem.properties.status,
    ];
    expect(integers).toHaveLength(10);
    for (const schema of integers) {
      expect(schema.type).toBe("integer");
      expect(schema.anyOf).toBeUndefined();
    }
    expect(stringOrNumberUnions(doc)).toEqual([]);
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

  it("documents the claim's rejections from the outcome table, the sale's on 409 in the order they are checked", () => {
    const responses = doc.paths["/api/coupons/claim"].post.responses;
    const examples = (status: number) => responses[status].content["application/problem+json"].examples;
    expect(Object.keys(examples(409))).toEqual([
      "already_claimed",
      "sale_paused",
      "sale_not_started",
      "sale_ended",
      "sold_out",
      "idempotency_key_in_use",
    ]);
    expect(responses[409].description).toStartWith(
      "ALREADY_CLAIMED or SALE_PAUSED or SALE_NOT_STARTED or SALE_ENDED or SOLD_OUT or IDEMPOTENCY_KEY_IN_USE: the sale's checked in that order",
    );
    expect(Object.keys(examples(404))).toEqual(["not_found"]);
    expect(Object.keys(examples(422))).toEqual(["idempotency_key_reused"]);
    const release = doc.paths["/api/coupons/{name}/claims/{user_id}"].delete.responses;
    expect(Object.keys(release[404].content["application/problem+json"].examples)).toEqual([
      "not_found",
      "claim_not_found",
    ]);
    // A release is never refused for the sale: its only 409 is the key's.
    expect(Object.keys(release[409].content["application/problem+json"].examples)).toEqual(["idempotency_key_in_use"]);
    const create = doc.paths["/api/coupons"].post.responses;
    for (const [outcome, rejection] of Object.entries(rejections)) {
      // A create's refusal is documented under its code; a claim's and a release's under their outcome.
      const [statuses, name] =
        outcome === "coupon_exists"
          ? [create, rejection.code]
          : [outcome === "claim_not_found" ? release : responses, outcome];
      const value = statuses[errorStatus[rejection.code]].content["application/problem+json"].examples[name].value;
      const detail = detailOf(rejection, "BLACK_FRIDAY");
      expect({ code: value.code, detail: value.detail }).toEqual({ code: rejection.code, detail });
    }
  });

  it("documents the key's refusals on create, claim and release from the outcome table: 422 reused, 409 in use", () => {
    const keyed = [
      doc.paths["/api/coupons"].post,
      doc.paths["/api/coupons/claim"].post,
      doc.paths["/api/coupons/{name}/claims/{user_id}"].delete,
    ];
    const create = doc.paths["/api/coupons"].post.responses;
    expect(Object.keys(create[409].content["application/problem+json"].examples)).toEqual([
      "COUPON_EXISTS",
      "idempotency_key_in_use",
    ]);
    for (const operation of keyed) {
      const examples = (status: number) => operation.responses[status].content["application/problem+json"].examples;
      expect(Object.keys(examples(422))).toEqual(["idempotency_key_reused"]);
      for (const [status, outcome] of [
        [422, "idempotency_key_reused"],
        [409, "idempotency_key_in_use"],
      ] as const) {
        const { code, detail } = examples(status)[outcome].value;
        const rejection = rejections[outcome];
        expect({ code, detail }).toEqual({ code: rejection.code, detail: rejection.detail });
      }
      expect(examples(400).badKey.value.detail).toBe(
        "Idempotency-Key: must be 1..255 printable ASCII characters (a quoted string counts without its quotes)",
      );
    }
    const unkeyed = operations(doc).filter(({ operation }) => !keyed.includes(operation));
    for (const { path, method, operation } of unkeyed) {
      expect(Object.keys(operation.responses), `${method} ${path}`).not.toContain("422");
    }
  });

  it("documents the optional Idempotency-Key header on create, claim and release, and on no other operation", () => {
    const keyParameter = (operation: Json) =>
      ((operation.parameters ?? []) as Json[]).filter(
        (parameter) => parameter.in === "header" && parameter.name.toLowerCase() === "idempotency-key",
      );
    const keyed = ["post /api/coupons", "post /api/coupons/claim", "delete /api/coupons/{name}/claims/{user_id}"];
    const descriptions = new Set<string>();
    for (const { path, method, operation } of operations(doc)) {
      const found = keyParameter(operation);
      if (!keyed.includes(`${method} ${path}`)) {
        expect(found, `${method} ${path}`).toEqual([]);
        continue;
      }
      expect(found, `${method} ${path}`).toHaveLength(1);
      const [parameter] = found as [Json];
      expect(parameter.required, `${method} ${path}`).toBe(false);
      expect(parameter.schema.type, `${method} ${path}`).toBe("string");
      // Release declares it as a header schema, which carries the description inside the schema.
      descriptions.add(parameter.description ?? parameter.schema.description);
    }
    expect(descriptions.size).toBe(1);
    const [description] = descriptions as Set<string>;
    for (const rule of [
      "1..255 printable ASCII",
      "Idempotent-Replayed: true",
      "IDEMPOTENCY_TTL",
      "IDEMPOTENCY_KEY_REUSED",
    ])
      expect(description).toContain(rule);
  });

  it("offers the bearer scheme on create, PATCH and release only, where it is needed when ADMIN_TOKEN is set", () => {
    expect(doc.components.securitySchemes.adminToken).toMatchObject({ type: "http", scheme: "bearer" });
    const guardedRoutes = [
      "post /api/coupons",
      "patch /api/coupons/{name}",
      "delete /api/coupons/{name}/claims/{user_id}",
    ];
    for (const { path, method, operation } of operations(doc)) {
      const behindToken = guardedRoutes.includes(`${method} ${path}`);
      expect(operation.security, `${method} ${path}`).toEqual(behindToken ? [{}, { adminToken: [] }] : []);
      expect(Object.keys(operation.responses).filter((status) => status === "401" || status === "403")).toEqual(
        behindToken ? ["401", "403"] : [],
      );
    }
  });

  it("declares X-Request-Id on every answer, Location on a create's 201, Retry-After on every 503 problem and every 409 of a keyed route, Idempotent-Replayed on the answers a key stores", () => {
    const ref = (name: string) => ({ $ref: `#/components/headers/${name}` });
    // The answers a key stores and gives again: successes and the refusals that are not a retry's.
    const replayable = [
      "post /api/coupons 201",
      "post /api/coupons 409",
      "post /api/coupons/claim 201",
      "post /api/coupons/claim 404",
      "post /api/coupons/claim 409",
      "delete /api/coupons/{name}/claims/{user_id} 200",
      "delete /api/coupons/{name}/claims/{user_id} 404",
    ];
    const keyed = ["post /api/coupons", "post /api/coupons/claim", "delete /api/coupons/{name}/claims/{user_id}"];
    for (const { path, method, operation } of operations(doc)) {
      for (const [status, response] of Object.entries(operation.responses as Json)) {
        const where = `${method} ${path} ${status}`;
        expect(response.headers["X-Request-Id"]).toEqual(ref("X-Request-Id"));
        const problem = !!response.content?.["application/problem+json"];
        // A 409 of a keyed route can be IDEMPOTENCY_KEY_IN_USE (and the claim's SALE_NOT_STARTED).
        const retry = problem && (status === "503" || (keyed.includes(`${method} ${path}`) && status === "409"));
        expect(response.headers["Retry-After"], where).toEqual(retry ? ref("Retry-After") : undefined);
        expect(response.headers["Idempotent-Replayed"], where).toEqual(
          replayable.includes(where) ? ref("Idempotent-Replayed") : undefined,
        );
      }
    }
    expect(doc.paths["/api/coupons"].post.responses["201"].headers.Location).toEqual(ref("Location"));
    const jwks = doc.paths["/.well-known/jwks.json"].get.responses;
    for (const status of ["200", "304"]) {
      expect(jwks[status].headers, status).toEqual({
        "X-Request-Id": ref("X-Request-Id"),
        "Cache-Control": ref("Cache-Control"),
        ETag: ref("ETag"),
      });
    }
    expect(Object.keys(jwks["200"].content)).toEqual(["application/jwk-set+json"]);
    expect(jwks["304"].content).toBeUndefined();
    expect(Object.keys(doc.components.headers).sort()).toEqual([
      "Cache-Control",
      "ETag",
      "Idempotent-Replayed",
      "Location",
      "Retry-After",
      "WWW-Authenticate",
      "X-Request-Id",
    ]);
    expect(doc.components.headers["Idempotent-Replayed"].schema).toEqual({ type: "string", enum: ["true"] });
  });
});

describe("the documented examples", () => {
  const examplesOf = (path: string, method: string, status: number) =>
    doc.paths[path][method].responses[status].content["application/problem+json"].examples as Json;
  const json = { "content-type": "application/json" };
  const big = JSON.stringify({ name: "x".repeat(MAX_BODY_BYTES), amount: 1 });

  // A key used for one request, then sent with another; a key that is not 1..255 printable ASCII.
  const reusedKey = { "idempotency-key": "example-reused-key" };
  const badKey = { "idempotency-key": "k".repeat(256) };

  // Each documented example with the request that provokes it; the rest cannot be provoked here.
  const backwards = { starts_at: "2026-11-27T21:00:00Z", ends_at: "2026-11-27T09:00:00Z" };
  const provoked: Record<string, () => Promise<ApiResponse>> = {
    // Before BLACK_FRIDAY exists.
    "get /api/coupons/{name} 404 COUPON_NOT_FOUND": () => api.getCoupon("BLACK_FRIDAY"),
    "patch /api/coupons/{name} 404 COUPON_NOT_FOUND": () => patch(api, "BLACK_FRIDAY", { active: false }),
    "delete /api/coupons/{name}/claims/{user_id} 404 not_found": () =>
      api.call("DELETE", "/api/coupons/BLACK_FRIDAY/claims/user-42"),
    "get /api/coupons/{name} 400 percentEncoding": () => api.get("/api/coupons/%FF"),
    "get /api/coupons/{name}/claims/{user_id} 404 COUPON_NOT_FOUND": () =>
      api.get("/api/coupons/BLACK_FRIDAY/claims/user-42"),
    "get /api/coupons/{name}/claims/{user_id} 400 percentEncoding": () => api.get("/api/coupons/%FF/claims/user-42"),
    "get /api/coupons 400 limit": () => api.get("/api/coupons?limit=101"),
    "post /api/coupons 400 amount": () => api.post("/api/coupons", { name: "TEN", amount: "10" }),
    "post /api/coupons 400 scheduleOrder": () =>
      api.post("/api/coupons", { name: "BACKWARDS", amount: 1, ...backwards }),
    "post /api/coupons 400 malformedJson": () => api.call("POST", "/api/coupons", { body: "{", headers: json }),
    "post /api/coupons 401 UNAUTHORIZED": () => guarded.createCoupon("GUARDED", 1),
    "post /api/coupons 403 FORBIDDEN": () => guarded.createCoupon("GUARDED", 1, { authorization: "Bearer wrong" }),
    "post /api/coupons 409 COUPON_EXISTS": async () => {
      await api.createCoupon("BLACK_FRIDAY", 1);
      return api.createCoupon("BLACK_FRIDAY", 1);
    },
    // BLACK_FRIDAY exists, and user-42 holds no claim on it yet.
    "delete /api/coupons/{name}/claims/{user_id} 404 claim_not_found": () =>
      api.call("DELETE", "/api/coupons/BLACK_FRIDAY/claims/user-42"),
    "get /api/coupons/{name}/claims/{user_id} 404 CLAIM_NOT_FOUND": () =>
      api.get("/api/coupons/BLACK_FRIDAY/claims/user-42"),
    // A real claim and release, the release's time then moved to the example's instant.
    "get /api/coupons/{name}/claims/{user_id} 404 released": async () => {
      await api.claim("user-42", "BLACK_FRIDAY");
      await api.call("DELETE", "/api/coupons/BLACK_FRIDAY/claims/user-42");
      await database.sql`update claim_releases set released_at = '2026-11-27T09:05:00Z'
        where coupon_name = 'BLACK_FRIDAY' and user_id = 'user-42'`;
      return api.get("/api/coupons/BLACK_FRIDAY/claims/user-42");
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
    "post /api/coupons/claim 409 sale_paused": async () => {
      await api.createCoupon("PAUSED", 1);
      await patch(api, "PAUSED", { active: false });
      return api.claim("user-42", "PAUSED");
    },
    "post /api/coupons/claim 409 sale_not_started": async () => {
      await api.post("/api/coupons", { name: "NOT_STARTED", amount: 1, starts_at: "2999-01-01T00:00:00Z" });
      return api.claim("user-42", "NOT_STARTED");
    },
    "post /api/coupons/claim 409 sale_ended": async () => {
      const past = { starts_at: "2020-01-01T00:00:00Z", ends_at: "2020-01-02T00:00:00Z" };
      await api.post("/api/coupons", { name: "ENDED", amount: 1, ...past });
      return api.claim("user-42", "ENDED");
    },
    "post /api/coupons/claim 413 tooLarge": () => api.call("POST", "/api/coupons/claim", { body: big, headers: json }),
    "post /api/coupons/claim 415 notJson": () => api.call("POST", "/api/coupons/claim", { body: "{}" }),
    // BLACK_FRIDAY exists from here on: each PATCH is refused before it is looked up, or by the token.
    "patch /api/coupons/{name} 400 scheduleOrder": () => patch(api, "BLACK_FRIDAY", backwards),
    "patch /api/coupons/{name} 400 amount": () => patch(api, "BLACK_FRIDAY", { amount: 5 }),
    "patch /api/coupons/{name} 400 empty": () => patch(api, "BLACK_FRIDAY", {}),
    "patch /api/coupons/{name} 401 UNAUTHORIZED": () => patch(guarded, "BLACK_FRIDAY", { active: false }),
    "patch /api/coupons/{name} 403 FORBIDDEN": () =>
      patch(guarded, "BLACK_FRIDAY", { active: false }, { authorization: "Bearer wrong" }),
    "patch /api/coupons/{name} 413 tooLarge": () =>
      api.call("PATCH", "/api/coupons/BLACK_FRIDAY", { body: big, headers: json }),
    "patch /api/coupons/{name} 415 notJson": () => api.call("PATCH", "/api/coupons/BLACK_FRIDAY", { body: "{}" }),
    "delete /api/coupons/{name}/claims/{user_id} 400 percentEncoding": () =>
      api.call("DELETE", "/api/coupons/%FF/claims/user-42"),
    "delete /api/coupons/{name}/claims/{user_id} 401 UNAUTHORIZED": () =>
      guarded.call("DELETE", "/api/coupons/BLACK_FRIDAY/claims/user-42"),
    "delete /api/coupons/{name}/claims/{user_id} 403 FORBIDDEN": () =>
      guarded.call("DELETE", "/api/coupons/BLACK_FRIDAY/claims/user-42", {
        headers: { authorization: "Bearer wrong" },
      }),
    "post /api/coupons 400 badKey": () => api.post("/api/coupons", { name: "BAD_KEY", amount: 1 }, badKey),
    "post /api/coupons/claim 400 badKey": () =>
      api.post("/api/coupons/claim", { user_id: "user-42", coupon_name: "BLACK_FRIDAY" }, badKey),
    "delete /api/coupons/{name}/claims/{user_id} 400 badKey": () =>
      api.call("DELETE", "/api/coupons/BLACK_FRIDAY/claims/user-42", { headers: badKey }),
    "post /api/coupons 422 idempotency_key_reused": async () => {
      await api.post("/api/coupons", { name: "REUSED_KEY", amount: 1 }, reusedKey);
      return api.post("/api/coupons", { name: "REUSED_KEY", amount: 2 }, reusedKey);
    },
    "post /api/coupons/claim 422 idempotency_key_reused": () =>
      api.post("/api/coupons/claim", { user_id: "user-42", coupon_name: "BLACK_FRIDAY" }, reusedKey),
    "delete /api/coupons/{name}/claims/{user_id} 422 idempotency_key_reused": () =>
      api.call("DELETE", "/api/coupons/BLACK_FRIDAY/claims/user-42", { headers: reusedKey }),
    "post /api/coupons 409 idempotency_key_in_use": async () => (await keyInUse()).create,
    "post /api/coupons/claim 409 idempotency_key_in_use": async () => (await keyInUse()).claim,
    "delete /api/coupons/{name}/claims/{user_id} 409 idempotency_key_in_use": async () => (await keyInUse()).release,
  };

  /**
   * IDEMPOTENCY_KEY_IN_USE on each keyed route, from an app with a 1.5 s deadline. The key's row is
   * held by an open transaction, so a create with the key waits for it in the database; a second
   * create waits its turn in the process, and then waits in the database for a whole deadline again
   * (as a create does once it runs). Requests queued behind that one reach their deadlines first.
   */
  let inUse: Promise<Record<"create" | "claim" | "release", ApiResponse>> | undefined;
  const keyInUse = () => {
    inUse ??= (async () => {
      const slowApp = buildApp(database.handle.db, { timeoutMs: 1500 }).app;
      const slow = client(slowApp);
      const inUseKey = { "idempotency-key": "example-key-in-use" };
      const holder = await database.sql.reserve();
      const lockWaits = async () =>
        (
          await database.sql<{ n: number }[]>`select count(*)::int as n from pg_stat_activity
            where datname = current_database() and wait_event_type = 'Lock'`
        )[0]?.n ?? 0;
      try {
        await holder`begin`;
        await holder`insert into idempotency_keys (key, fingerprint, created_at, expires_at)
          values (${inUseKey["idempotency-key"]}, 'held by the test', now(), now() + interval '1 hour')`;
        const body = { name: "KEY_IN_USE", amount: 1 };
        const first = slow.post("/api/coupons", body, inUseKey);
        await until(async () => (await lockWaits()) >= 1, "the first create waiting for the key's row");
        // The second create's body is streamed, so the test knows when it was read: from there to
        // its wait for the key only promise callbacks run.
        let sent = false;
        let markRead = () => {};
        const read = new Promise<void>((resolve) => {
          markRead = resolve;
        });
        const stream = new ReadableStream<Uint8Array>({
          pull(controller) {
            if (sent) {
              controller.close();
              markRead();
            } else controller.enqueue(new TextEncoder().encode(JSON.stringify(body)));
            sent = true;
          },
        });
        const second = slowApp.handle(
          new Request("http://localhost/api/coupons", {
            method: "POST",
            headers: { ...json, ...inUseKey },
            body: stream,
          }),
        );
        await read;
        await Bun.sleep(10);
        const [create, claim, release] = await Promise.all([
          slow.post("/api/coupons", body, inUseKey),
          slow.post("/api/coupons/claim", { user_id: "user-42", coupon_name: "BLACK_FRIDAY" }, inUseKey),
          slow.call("DELETE", "/api/coupons/BLACK_FRIDAY/claims/user-42", { headers: inUseKey }),
        ]);
        await holder`rollback`;
        await Promise.all([first, second]);
        return { create, claim, release } as Record<"create" | "claim" | "release", ApiResponse>;
      } finally {
        await holder`rollback`.catch(() => {});
        holder.release();
      }
    })();
    return inUse;
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
      // The path sent carries the invalid encoding in place of the example's name.
      if (key.includes("percentEncoding")) expected.instance = expected.instance.replace("BLACK_FRIDAY", "%FF");
      const { request_id: __, ...answered } = res.body;
      expect(JSON.stringify(answered), key).toBe(JSON.stringify(expected));
    }
  });

  it("leave out only answers a healthy service cannot be made to give: 500 and 503", () => {
    const documented = operations(doc).flatMap(({ path, method, operation }) =>
      Object.entries(operation.responses as Json).flatMap(([status, response]) =>
        Object.keys(response.content?.["application/problem+json"]?.examples ?? {}).map(
          (name) => `${method} ${path} ${status} ${name}`,
        ),
      ),
    );
    const unprovoked = documented.filter((key) => !(key in provoked));
    expect(unprovoked.filter((key) => !/ (500|503) /.test(key))).toEqual([]);
    expect(Object.keys(provoked).filter((key) => !documented.includes(key))).toEqual([]);
  });

  it("include the request bodies, which the service accepts as they are", async () => {
    const examples = (path: string, method: string) =>
      doc.paths[path][method].requestBody.content["application/json"].schema.examples as Json[];
    const creates = examples("/api/coupons", "post");
    expect(creates).toHaveLength(2);
    for (const [i, create] of creates.entries()) {
      const created = await api.post("/api/coupons", { ...create, name: `EXAMPLE_BODY_${i}` });
      expect(created.status).toBe(201);
      expect(created.headers.get("location")).toBe(`/api/coupons/EXAMPLE_BODY_${i}`);
      const given = ["starts_at", "ends_at"].filter((field) => field in create);
      for (const field of given) expect(created.body[field]).toBe(new Date(create[field]).toISOString());
    }
    const [claim] = examples("/api/coupons/claim", "post");
    expect((await api.post("/api/coupons/claim", { ...claim, coupon_name: "EXAMPLE_BODY_0" })).status).toBe(201);
    const [pause, reschedule] = examples("/api/coupons/{name}", "patch");
    const paused = await patch(api, "EXAMPLE_BODY_1", pause);
    expect(paused.status).toBe(200);
    expect(paused.body.active).toBe(false);
    const rescheduled = await patch(api, "EXAMPLE_BODY_1", reschedule);
    expect(rescheduled.status).toBe(200);
    expect(rescheduled.body.starts_at).toBe("2026-11-27T10:00:00.000Z");
    expect(rescheduled.body.ends_at).toBeUndefined();
  });
});
