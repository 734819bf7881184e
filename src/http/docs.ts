// The API documentation: GET /docs (Swagger UI) and GET /docs/json (OpenAPI 3, generated from the
// routes' TypeBox schemas). The UI's JavaScript and CSS are embedded in the binary and served from
// /docs/assets, so the page works on a machine with no internet (the plugin's default is a CDN).
import { openapi } from "@elysiajs/openapi";
import { Elysia } from "elysia";
import cssPath from "../../node_modules/swagger-ui-dist/swagger-ui.css" with { type: "file" };
import bundlePath from "../../node_modules/swagger-ui-dist/swagger-ui-bundle.js" with { type: "file" };
import { AppError } from "../domain/errors";
import { documentedComponents } from "./openapi";

const ASSETS = "/docs/assets";

// A Map, not an object literal: a plain object would also "have" constructor, toString, __proto__...
const assets = new Map([
  ["swagger-ui-bundle.js", { path: bundlePath, type: "text/javascript; charset=utf-8" }],
  ["swagger-ui.css", { path: cssPath, type: "text/css; charset=utf-8" }],
]);

/**
 * The docs routes, to `.use()` after every documented route's plugin is known; `schemes`: security
 * schemes beside adminToken (bearer JWTs, auth-docs.ts).
 */
export function docs(schemes: Record<string, object> = {}) {
  return new Elysia()
    .use(
      openapi({
        path: "/docs",
        specPath: "/docs/json",
        provider: "swagger-ui",
        swagger: {
          cdn: `${ASSETS}/swagger-ui-bundle.js`,
          theme: `${ASSETS}/swagger-ui.css`,
          autoDarkMode: false,
          // Absolute, so the page also works at /docs/ (the plugin's relative "docs/json" would not).
          ...({ url: "/docs/json" } as object),
        },
        documentation: {
          info: {
            title: "Flash-sale coupon service",
            version: "1.0.0",
            description:
              "Hands out limited coupons to many simultaneous users: never oversells, never lets a user claim twice. " +
              "Every error is an RFC 9457 problem (application/problem+json) with a stable `code` to branch on.",
          },
          // Relative: "Try it out" sends to whichever address served the page.
          servers: [{ url: "/", description: "This service" }],
          tags: [
            { name: "coupons", description: "Create, schedule, list, claim and read coupons" },
            { name: "receipts", description: "The keys that verify claim receipts offline" },
            { name: "health", description: "Liveness and readiness" },
          ],
          components: {
            ...documentedComponents,
            securitySchemes: {
              adminToken: {
                type: "http",
                scheme: "bearer",
                description:
                  "ADMIN_TOKEN, when the service is started with one; only creating and changing coupons need it",
              },
              ...schemes,
            },
          },
        },
        // staticFile: the plugin leaves out every path with a dot, /.well-known/jwks.json among them.
        exclude: { paths: ["/metrics", new RegExp(`^${ASSETS}`)], staticFile: false },
      }),
    )
    .get(`${ASSETS}/:file`, ({ params, set }) => {
      const asset = assets.get(params.file);
      if (!asset) throw new AppError("NOT_FOUND", "No such documentation asset.");
      set.headers["cache-control"] = "public, max-age=86400";
      return new Response(Bun.file(asset.path), { headers: { "content-type": asset.type } });
    });
}
