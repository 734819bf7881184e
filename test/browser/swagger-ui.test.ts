// The docs UI as a developer uses it: real Chromium opens /docs on a running service, and "Try it out"
// creates a coupon, claims it twice and reads it; on a service with bearer JWTs (AUTH_*, an issuer in
// this process), Authorize takes a user's JWT and the claim succeeds with it. Nothing may leave the
// machine: every request that is not to the test's own servers is aborted (and counted). Skipped only off CI on a machine without
// Chromium (`apt-get install chromium`); .ci/run installs it. CHROMIUM_PATH names another build.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type BrowserContext, chromium, type Locator, type Page } from "playwright-core";
import { buildApp, listen } from "../support/app";
import { createTestDatabase, type TestDatabase } from "../support/database";
import { startIssuer, type TestIssuer } from "../support/issuer";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const runs = existsSync(CHROMIUM) || process.env.CI === "true";
if (!runs) console.warn(`test/browser/swagger-ui.test.ts skipped: no ${CHROMIUM} (apt-get install chromium)`);

let database: TestDatabase;
let server: ReturnType<typeof listen>;
let profile: string;
let context: BrowserContext;
let page: Page;
const outside: string[] = [];
/** The base URLs of the servers this file starts: the only places the browser may send to. */
const ours: string[] = [];

beforeAll(async () => {
  if (!runs) return;
  database = await createTestDatabase();
  server = listen(buildApp(database.handle.db).app);
  ours.push(server.baseUrl);
  profile = mkdtempSync(join(tmpdir(), "chromium-profile-"));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (ours.some((base) => url.startsWith(`${base}/`))) return route.continue();
    outside.push(url);
    return route.abort();
  });
  page = context.pages()[0] ?? (await context.newPage());
  await page.goto(`${server.baseUrl}/docs`);
}, 30_000);

afterAll(async () => {
  if (!runs) return;
  await context?.close();
  await server?.stop();
  await database?.drop();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

/** The operation's block in the UI (Swagger UI names it by tag and operationId), opened, with Try it out on. */
async function tryItOut(operationId: string, on: Page = page): Promise<Locator> {
  const operation = on.locator(`#operations-coupons-${operationId}`);
  if (!(await operation.locator(".try-out__btn").isVisible())) await operation.locator(".opblock-summary").click();
  const button = operation.locator(".try-out__btn");
  if ((await button.textContent())?.trim() === "Try it out") await button.click();
  return operation;
}

/** Presses Execute and returns the status and body the UI shows for the server's answer. */
async function execute(operation: Locator): Promise<{ status: number; body: any }> {
  const clear = operation.locator(".btn-clear");
  if (await clear.isVisible()) await clear.click(); // the previous answer goes, so the next one is new
  await operation.locator(".execute").click();
  const answer = operation.locator(".live-responses-table .response").first();
  await answer.waitFor({ timeout: 10_000 });
  const status = Number((await answer.locator(".response-col_status").textContent())?.trim());
  const body = JSON.parse((await answer.locator(".response-col_description pre").first().textContent()) ?? "");
  return { status, body };
}

describe.skipIf(!runs)("Swagger UI at /docs, in Chromium", () => {
  it("renders every documented operation from the service's own assets", async () => {
    await page.locator(".opblock").first().waitFor({ timeout: 15_000 });
    const summaries = await page.locator(".opblock-summary-path").allTextContents();
    expect(summaries.map((path) => path.replace(/\u200b/g, ""))).toEqual([
      "/api/coupons",
      "/api/coupons",
      "/api/coupons/claim",
      "/api/coupons/{name}",
      "/api/coupons/{name}",
      "/api/coupons/{name}/claims/{user_id}",
      "/api/coupons/{name}/claims/{user_id}",
      "/.well-known/jwks.json",
      "/health/live",
      "/health/ready",
    ]);
    await expect(page.locator(".btn.authorize").count()).resolves.toBe(1);
  }, 30_000);

  it("creates the documented example coupon with Try it out: 201", async () => {
    const create = await tryItOut("postApiCoupons");
    const sent = JSON.parse(await create.locator("textarea.body-param__text").inputValue());
    expect(sent).toEqual({ name: "BLACK_FRIDAY", amount: 100 });
    expect(await execute(create)).toEqual({
      status: 201,
      body: { name: "BLACK_FRIDAY", amount: 100, remaining_amount: 100 },
    });
  }, 30_000);

  it("claims it for the example user: 201", async () => {
    const claim = await tryItOut("postApiCouponsClaim");
    const answer = await execute(claim);
    expect(answer.status).toBe(201);
    expect(answer.body).toMatchObject({ user_id: "user-42", coupon_name: "BLACK_FRIDAY" });
  }, 30_000);

  it("claims it again: 409 ALREADY_CLAIMED", async () => {
    const answer = await execute(await tryItOut("postApiCouponsClaim"));
    expect(answer.status).toBe(409);
    expect(answer.body).toMatchObject({ code: "ALREADY_CLAIMED", status: 409, instance: "/api/coupons/claim" });
  }, 30_000);

  it("reads it: 200 with the claimer", async () => {
    const read = await tryItOut("getApiCouponsByName");
    await read.locator('input[placeholder="name"]').fill("BLACK_FRIDAY");
    expect(await execute(read)).toEqual({
      status: 200,
      body: { name: "BLACK_FRIDAY", amount: 100, remaining_amount: 99, claimed_by: ["user-42"] },
    });
  }, 30_000);

  it("lists it: 200 with one page", async () => {
    expect(await execute(await tryItOut("getApiCoupons"))).toEqual({
      status: 200,
      body: { coupons: [{ name: "BLACK_FRIDAY", amount: 100, remaining_amount: 99 }], next_after: null },
    });
  }, 30_000);

  it("pauses it with the documented PATCH example, and a claim is then SALE_PAUSED", async () => {
    const pause = await tryItOut("patchApiCouponsByName");
    await pause.locator('input[placeholder="name"]').fill("BLACK_FRIDAY");
    expect(JSON.parse(await pause.locator("textarea.body-param__text").inputValue())).toEqual({ active: false });
    expect(await execute(pause)).toEqual({
      status: 200,
      body: { name: "BLACK_FRIDAY", amount: 100, remaining_amount: 99, active: false },
    });
    const claim = await tryItOut("postApiCouponsClaim");
    const body = claim.locator("textarea.body-param__text");
    await body.fill(JSON.stringify({ user_id: "user-43", coupon_name: "BLACK_FRIDAY" }));
    const answer = await execute(claim);
    expect([answer.status, answer.body.code]).toEqual([409, "SALE_PAUSED"]);
  }, 30_000);

  it("releases the example user's claim, even while paused: 200 with the unit back", async () => {
    const release = await tryItOut("deleteApiCouponsByNameClaimsByUser_id");
    await release.locator('input[placeholder="name"]').fill("BLACK_FRIDAY");
    await release.locator('input[placeholder="user_id"]').fill("user-42");
    const answer = await execute(release);
    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({ coupon_name: "BLACK_FRIDAY", user_id: "user-42", remaining_amount: 100 });
  }, 30_000);
});

describe.skipIf(!runs)("Swagger UI at /docs with bearer JWTs, in Chromium", () => {
  let issuer: TestIssuer;
  let jwtDatabase: TestDatabase;
  let jwtServer: ReturnType<typeof listen>;
  let jwtPage: Page;
  beforeAll(async () => {
    issuer = await startIssuer();
    jwtDatabase = await createTestDatabase();
    jwtServer = listen(buildApp(jwtDatabase.handle.db, { tokens: issuer.verifier() }).app);
    ours.push(jwtServer.baseUrl);
    const created = await fetch(`${jwtServer.baseUrl}/api/coupons`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ name: "BLACK_FRIDAY", amount: 10 }),
    });
    expect(created.status).toBe(201);
    jwtPage = await context.newPage();
    await jwtPage.goto(`${jwtServer.baseUrl}/docs`);
    await jwtPage.locator(".opblock").first().waitFor({ timeout: 15_000 });
  }, 30_000);
  afterAll(async () => {
    await jwtPage?.close();
    await jwtServer?.stop();
    await jwtDatabase?.drop();
    await issuer?.stop();
  });

  it("answers a claim sent without authorizing 401 UNAUTHORIZED", async () => {
    const answer = await execute(await tryItOut("postApiCouponsClaim", jwtPage));
    expect([answer.status, answer.body.code]).toEqual([401, "UNAUTHORIZED"]);
  }, 30_000);

  it("authorizes with the example user's JWT in the user's scheme, and claims: 201", async () => {
    await jwtPage.locator(".btn.authorize").first().click();
    const scheme = jwtPage.locator(".auth-container", { hasText: "userJwt" });
    await scheme.locator("input").fill(await issuer.mint("user-42"));
    await scheme.locator("button.authorize").click();
    await scheme.locator("h6", { hasText: "Authorized" }).waitFor();
    await jwtPage.locator(".close-modal").click();
    const answer = await execute(await tryItOut("postApiCouponsClaim", jwtPage));
    expect(answer.status).toBe(201);
    expect(answer.body).toMatchObject({ user_id: "user-42", coupon_name: "BLACK_FRIDAY" });
  }, 30_000);

  it("refuses the same JWT for another user with 403 FORBIDDEN_USER", async () => {
    const claim = await tryItOut("postApiCouponsClaim", jwtPage);
    await claim
      .locator("textarea.body-param__text")
      .fill(JSON.stringify({ user_id: "user-43", coupon_name: "BLACK_FRIDAY" }));
    const answer = await execute(claim);
    expect([answer.status, answer.body.code]).toEqual([403, "FORBIDDEN_USER"]);
  }, 30_000);
});

describe.skipIf(!runs)("the browser", () => {
  it("sent nothing anywhere but the test's services", () => {
    expect(outside).toEqual([]);
  });
});
