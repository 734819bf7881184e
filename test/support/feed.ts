// A change feed the test drives by hand: live or lost when told, with the clock offset it is given,
// and changes announced only when the test calls announce. buildApp's default, for one instance
// whose coupons change only through itself.
import type { ChangeFeed, ChangeListener, ClockReading } from "../../src/db/changes";

export interface TestFeed extends ChangeFeed {
  /** Delivers a change of `couponName` to the listeners, as a NOTIFY would. */
  announce(couponName: string): void;
  /** Turns listening off (listeners hear `lost`) or back on. */
  setLive(up: boolean): void;
  clock: ClockReading;
}

export function testFeed(options: { now?: () => number; clock?: ClockReading } = {}): TestFeed {
  const listeners: ChangeListener[] = [];
  let live = true;
  return {
    get live() {
      return live;
    },
    clock: options.clock ?? { offsetMs: 0, uncertaintyMs: 0 },
    now: options.now ?? Date.now,
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
