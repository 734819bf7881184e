// The one way the service opens a postgres.js client: the pool's options, safe behind a transaction
// pooler, with every statement under the configured timeouts however the server takes them.
import postgres from "postgres";
import type { Config } from "../config";
import { type BoundedClient, boundedClient, configuredTimeouts } from "./timeouts";

export type PostgresOptions = Pick<
  Config,
  "DATABASE_POOL_MAX" | "DATABASE_CONNECT_TIMEOUT_MS" | "DATABASE_STATEMENT_TIMEOUT_MS"
>;

/** postgres.js options, and the one its .d.ts leaves out. */
export type ClientOptions = postgres.Options<Record<string, postgres.PostgresType>> & { max_pipeline?: number };

/** postgres.js options for the pool; safe behind a transaction pooler such as PgBouncer. */
export function postgresOptions(config: PostgresOptions): ClientOptions {
  return {
    max: config.DATABASE_POOL_MAX,
    connect_timeout: config.DATABASE_CONNECT_TIMEOUT_MS / 1000,
    idle_timeout: 60,
    // The default backoff grows to 20 s between reconnects; a flash sale cannot wait that long.
    backoff: (attempt) => Math.min(0.05 * 2 ** attempt, 1),
    // No named prepared statements. Behind a transaction pooler the next transaction may run on a server
    // connection that never saw this connection's statements; the driver then retries its own `commit`
    // inside the aborted transaction, where PostgreSQL answers it with a rollback that the driver reports
    // as success: acknowledged claims that do not exist. Drizzle's queries are unnamed anyway; this makes
    // the driver's commit, rollback and savepoint unnamed too, in the same single round trip.
    prepare: false,
    // Nothing pipelined: a statement goes out once the connection has answered the one before. Behind a
    // transaction pooler a statement sent behind another is lost (the pooler hands the server connection
    // back at the first one's answer, with the second on it). postgres.js pipelines behind any statement
    // without parameters otherwise, and that rule every statement would have to keep. It costs nothing
    // measurable: a parameterised statement never had anything pipelined behind it. Typed by the driver's
    // source, not its .d.ts; BEGIN needs the patch (patches/postgres@3.4.9.patch).
    max_pipeline: 0,
    // The timeouts, applied at connect on a direct connection. A pooler refuses them or drops them
    // (ignore_startup_parameters): openClient then finds them missing and enforces them another way.
    connection: { application_name: "coupon-service", ...configuredTimeouts(config.DATABASE_STATEMENT_TIMEOUT_MS) },
    onnotice: () => {},
  };
}

/**
 * The one way the service opens a postgres.js client: postgresOptions (with `overrides`), every
 * statement under the configured timeouts however the server at `url` takes them (timeouts.ts).
 */
export function openClient(url: string, config: PostgresOptions, overrides: ClientOptions = {}): BoundedClient {
  const timeouts = configuredTimeouts(config.DATABASE_STATEMENT_TIMEOUT_MS);
  return boundedClient(postgres(url, { ...postgresOptions(config), ...overrides }), timeouts);
}
