// A bound on the paged coupon reads that run at once in this process: each one reads the database
// page after page and holds a page or two in memory, so a crowd of them must not crowd out claims.
import { fail } from "../domain/errors";

/** Bounds how many paged reads run at once; the rest wait in arrival order, until their deadline. */
export interface ReadSlots {
  /** Resolves to the (idempotent) release of a slot, or rejects with 503 at `deadline` (performance.now() ms). */
  acquire(deadline: number): Promise<() => void>;
}

/** A paged read that waited for a slot until its deadline. */
export const readsInFlight = {
  code: "SERVICE_UNAVAILABLE",
  detail: "Too many large coupon reads are in progress; retry shortly.",
} as const;

/** Creates a bound of `max` concurrent paged reads. */
export function createReadSlots(max: number): ReadSlots {
  let active = 0;
  const waiting: (() => void)[] = [];
  const release = () => {
    const next = waiting.shift();
    if (next) next();
    else active--;
  };
  const once = () => {
    let released = false;
    return () => {
      if (!released) release();
      released = true;
    };
  };
  return {
    acquire(deadline) {
      if (active < max) {
        active++;
        return Promise.resolve(once());
      }
      return new Promise((resolve, reject) => {
        const grant = () => {
          clearTimeout(timer);
          resolve(once());
        };
        const timer = setTimeout(() => {
          waiting.splice(waiting.indexOf(grant), 1);
          reject(fail(readsInFlight));
        }, deadline - performance.now());
        waiting.push(grant);
      });
    },
  };
}
