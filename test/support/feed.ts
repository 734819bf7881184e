// A change feed the test drives by hand: live or lost when told, on the database clock it is given,
// and changes announced only when the test calls announce. buildApp's default, for one instance
// whose coupons change only through itself: no lease to wait out, as in the embedded database.
import { loadConfig } from "../../src/config";
import type { ChangeFeed, ChangeListener, DatabaseClock } from "../../src/store/changes";

/** MEMORY_LEASE_MS as the service runs by default, for the tests that listen for real. */
export const defaultLeaseMs = loadConfig({}).MEMORY_LEASE_MS;

export interface TestFeed extends ChangeFeed {
  /** Delivers a change of `couponName` to the listeners, as a NOTIFY would. */
  announce(couponName: string): void;
  /** Turns listening off (listeners hear `lost`) or back on. */
  setLive(up: boolean): void;
}

/** A feed whose database clock runs `clock` (default: this host's, exactly). */
export function testFeed(options: { clock?: Partial<DatabaseClock>; leaseMs?: number } = {}): TestFeed {
  const listeners: ChangeListener[] = [];
  let live = true;
  const clock: DatabaseClock = { now: () => Date.now(), uncertaintyMs: 0, offsetMs: 0, ...options.clock };
  return {
    get live() {
      return live;
    },
    leased: () => live,
    leaseMs: options.leaseMs ?? 0,
    clock,
    subscribe: (listener) => void listeners.push(listener),
    announce(couponName) {
      for (const listener of listeners) listener.change(couponName);
    },
    setLive(up) {
      if (live && !up) for (const listener of listeners) listener.lost();
      live = up;
    },
    close: async () => {},
  };
}
