// A client-side deadline for database work. The server's statement_timeout cannot fire when the
// connection itself is stalled (the query never arrives), so every request bounds its own wait.
import { fail, failures } from "../domain/errors";

/** Resolves or rejects as `work` does, or rejects with a 503 after `ms` (the work itself goes on). */
export function withDeadline<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(fail(failures.databaseSlow)), ms);
  });
  return Promise.race([work, expired]).finally(() => clearTimeout(timer));
}
