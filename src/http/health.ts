// Liveness and readiness for orchestrators and load balancers.
import { Elysia, t } from "elysia";
import { ping } from "../store/client";
import type { Database } from "../store/database";
import { withDeadline } from "../store/deadline";
import { migrationsApplied } from "../store/migrate";
import { documentedResponses } from "./openapi";

export interface HealthDeps {
  db: Database;
  /** True once shutdown has begun: readiness fails so load balancers stop sending traffic. */
  isDraining: () => boolean;
  /** A readiness probe that cannot get an answer this fast says 503 (a stalled database is not ready). */
  probeTimeoutMs: number;
}

const Status = t.Object(
  {
    status: t.String({ examples: ["ready"] }),
    checks: t.Optional(
      t.Object(
        {
          database: t.String({ enum: ["ok", "read-only", "unreachable"] }),
          migrations: t.String({ enum: ["ok", "pending", "unknown"] }),
        },
        { description: "Absent while draining" },
      ),
    ),
  },
  { description: "`ok` (live); `ready`, `not ready` or `draining` (ready)" },
);
// Documented rather than declared as `response`, which would hide detail.responses (and so the
// X-Request-Id header) from the OpenAPI document.
const live = documentedResponses("/health/live", { 200: { description: "The process runs", schema: Status } });
const ready = documentedResponses("/health/ready", {
  200: { description: "Ready: the database answers and migrations are applied", schema: Status },
  503: {
    description: "Not ready: database unreachable, slow or read-only (a standby), migrations pending, or draining",
    schema: Status,
  },
});

/** GET /health/live (process up) and GET /health/ready (database answers, migrations applied, not draining). */
export function healthRoutes({ db, isDraining, probeTimeoutMs }: HealthDeps) {
  const answered = <T>(work: Promise<T>, fallback: T) => withDeadline(work, probeTimeoutMs).catch(() => fallback);
  return new Elysia({ prefix: "/health", tags: ["health"] })
    .get("/live", () => ({ status: "ok" }), {
      detail: { summary: "Liveness: 200 while the process runs", security: [], responses: live },
    })
    .get(
      "/ready",
      async ({ set }) => {
        if (isDraining()) {
          set.status = 503;
          return { status: "draining" };
        }
        const database = await answered(ping(db), "unreachable");
        const migrations =
          database === "ok" ? ((await answered(migrationsApplied(db), false)) ? "ok" : "pending") : "unknown";
        const ready = database === "ok" && migrations === "ok";
        set.status = ready ? 200 : 503;
        return { status: ready ? "ready" : "not ready", checks: { database, migrations } };
      },
      {
        detail: {
          summary: "Readiness: 200 when the database answers and migrations are applied, else 503",
          security: [],
          responses: ready,
        },
      },
    );
}
