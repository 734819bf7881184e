// What opening a database gives the rest of the service, whichever it is (client.ts opens PostgreSQL,
// embedded.ts PGlite): a file of types only, so neither needs the other.
import type { ChangeFeed, FeedOptions } from "./changes";
import type { Database } from "./database";
import type { TimeoutReport } from "./timeouts";

export interface DatabaseHandle {
  db: Database;
  kind: "postgres" | "pglite";
  /** Runs the embedded migrations in one transaction under a transaction-scoped advisory lock (one statement when all are applied). */
  migrate(): Promise<void>;
  /**
   * Proves the claim lock excludes on this database (lock-check.ts), or throws LockCheckError;
   * PGlite is one session in this process, where there is nothing to prove.
   */
  checkLock(): Promise<void>;
  /** Starts listening for coupon changes on a connection of its own (changes.ts). */
  listen(options: FeedOptions): Promise<ChangeFeed>;
  /** How the pool enforces the server-side timeouts (timeouts.ts); null for PGlite, which has none. */
  timeouts(): Promise<TimeoutReport | null>;
  /** Closes the connections, waiting at most `timeoutMs` for queries still running (default 5 s). */
  close(timeoutMs?: number): Promise<void>;
}
