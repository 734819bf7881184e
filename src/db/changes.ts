// The cross-replica channel that tells every instance a coupon changed: PostgreSQL LISTEN/NOTIFY on a
// connection of its own. A change is announced with pg_notify inside the transaction that makes it,
// so it reaches every listening instance once that commits, and never if it rolls back. What a
// replica answers from memory (coupons/answers.ts) is only as good as this channel: while it is down
// a replica cannot know what it missed, so `live` is false and nothing is answered from memory.
import type { PGlite } from "@electric-sql/pglite";
import { sql } from "drizzle-orm";
import postgres from "postgres";
import { errorFields, type Logger } from "../log";
import { type PostgresOptions, postgresOptions } from "./client";
import { withDeadline } from "./deadline";

export const CHANGES_CHANNEL = "coupon_changes";

/** The statement that announces a change of `couponName`; run it inside the transaction that changes it. */
export const announceChange = (couponName: string) => sql`select pg_notify(${CHANGES_CHANNEL}, ${couponName})`;

/** The database's clock minus this process's, as last measured on the listening connection. */
export interface ClockReading {
  offsetMs: number;
  /** Half the round trip of the reading: the true offset is within offsetMs ± uncertaintyMs. */
  uncertaintyMs: number;
}

export interface ChangeListener {
  /** `couponName` changed in a committed transaction. */
  change(couponName: string): void;
  /** Listening was lost: changes may be missed from now until `live` is true again. */
  lost(): void;
}

export interface ChangeFeed {
  /** True while listening: every change committed from now on reaches the listeners. */
  readonly live: boolean;
  readonly clock: ClockReading;
  /** This process's clock (epoch ms), the one `clock` is measured against. */
  now(): number;
  subscribe(listener: ChangeListener): void;
  close(): Promise<void>;
}

export interface FeedOptions {
  /** How often the listening connection is checked (and the clock read again). */
  heartbeatMs?: number;
  /**
   * Sends `payload` on the channel from another session (the pool). Each check then also waits for
   * it to come back: only a notification from elsewhere proves that changes reach this connection
   * (a transaction pooler accepts LISTEN and then delivers nothing).
   */
  probe?: (payload: string) => Promise<unknown>;
  log: Logger;
  /** This process's clock; replaceable so tests can skew a replica's. */
  now?: () => number;
}

/** The listeners of one feed, and its state as a ChangeFeed reports it. */
function feedState(now: () => number) {
  const listeners: ChangeListener[] = [];
  const state = {
    live: false,
    clock: { offsetMs: 0, uncertaintyMs: 0 } as ClockReading,
    now,
    subscribe: (listener: ChangeListener) => void listeners.push(listener),
    change: (couponName: string) => {
      for (const listener of listeners) listener.change(couponName);
    },
    setLive(up: boolean) {
      if (state.live === up) return;
      state.live = up;
      if (!up) for (const listener of listeners) listener.lost();
    },
    /** Reads the database's clock (epoch ms) with `read` and keeps the offset to this process's. */
    async readClock(read: () => Promise<number>) {
      const before = state.now();
      const databaseMs = await read();
      const after = state.now();
      state.clock = { offsetMs: databaseMs - (before + after) / 2, uncertaintyMs: (after - before) / 2 };
    },
    /** The ChangeFeed that reports this state; `close` stops whatever feeds it. */
    feed(close: () => Promise<void>): ChangeFeed {
      return {
        get live() {
          return state.live;
        },
        get clock() {
          return state.clock;
        },
        now: state.now,
        subscribe: state.subscribe,
        close,
      };
    },
  };
  return state;
}

/**
 * Listens on a dedicated connection to `url` (one the pool never shares: behind a transaction pooler,
 * point it past the pooler). Reconnects with backoff; each connection is live once LISTEN, a clock
 * reading and a probe from the pool succeeded, and stops being live the moment it closes or a
 * heartbeat (the same reading and probe) goes unanswered.
 */
export function listenPostgres(url: string, config: PostgresOptions, options: FeedOptions): ChangeFeed {
  const { log } = options;
  const heartbeatMs = options.heartbeatMs ?? 5000;
  const timeoutMs = Math.max(config.DATABASE_CONNECT_TIMEOUT_MS, 1000);
  const state = feedState(options.now ?? Date.now);
  let closed = false;
  let wake = () => {};
  let current: postgres.Sql | undefined;
  const nap = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });

  const readClock = (client: postgres.Sql) =>
    state.readClock(async () => {
      // With a parameter, like every statement outside a transaction (db/client.ts, ping).
      const [row] = await withDeadline(
        client`select ${1}::int as n, extract(epoch from clock_timestamp()) * 1000 as db_ms`,
        timeoutMs,
      );
      return Number(row?.db_ms);
    });

  // A probe's payload starts with a control character, which no coupon name may contain.
  let awaited: { payload: string; heard: () => void } | undefined;
  async function echo(): Promise<void> {
    const { probe } = options;
    if (!probe) return;
    const payload = `\u0001probe ${crypto.randomUUID()}`;
    const heard = new Promise<void>((resolve) => {
      awaited = { payload, heard: resolve };
    });
    try {
      await withDeadline(Promise.all([probe(payload), heard]), timeoutMs);
    } catch (error) {
      throw new Error(
        "a notification sent from the pool did not reach the listening connection (behind a transaction pooler, set LISTEN_DATABASE_URL to the server itself)",
        { cause: error },
      );
    }
  }
  const notified = (payload: string) => {
    if (!payload.startsWith("\u0001")) state.change(payload);
    else if (payload === awaited?.payload) awaited.heard();
  };

  async function run(): Promise<void> {
    let quiet = false;
    for (let attempt = 0; !closed; attempt++) {
      let dropped = false;
      // Set once this connection is given up on: its close, which comes later, must not wake the
      // backoff's nap (it did, and the feed retried as fast as a connection fails).
      let retired = false;
      const client = postgres(url, {
        ...postgresOptions(config),
        max: 1,
        idle_timeout: null,
        max_lifetime: null,
        fetch_types: false,
        onnotify: (channel: string, payload: string) => {
          if (channel === CHANGES_CHANNEL) notified(payload);
        },
        onclose: () => {
          dropped = true;
          state.setLive(false); // at once: a change committed from now on would be missed
          if (!retired) wake();
        },
      } as unknown as postgres.Options<Record<string, postgres.PostgresType>>);
      current = client;
      try {
        await withDeadline(client.unsafe(`listen ${CHANGES_CHANNEL}`), timeoutMs);
        await readClock(client);
        await echo();
        if (!dropped && !closed) {
          state.setLive(true);
          log.info("change feed live", { clock_offset_ms: Math.round(state.clock.offsetMs) });
          quiet = false;
          attempt = 0;
        }
        while (!dropped && !closed) {
          await nap(heartbeatMs);
          if (dropped || closed) break;
          await readClock(client);
          await echo();
        }
      } catch (error) {
        // Once per outage at warn, then at debug: a feed that cannot go live retries every second.
        if (!closed) log[quiet ? "debug" : "warn"]("change feed unavailable", errorFields(error));
        quiet = true;
      } finally {
        if (state.live && !closed) log.warn("change feed lost: every claim goes to the database until it is back");
        state.setLive(false);
        retired = true;
        await client.end({ timeout: 0 }).catch(() => {});
      }
      if (!closed) await nap(Math.min(50 * 2 ** attempt, 1000));
    }
  }
  void run();

  return state.feed(async () => {
    closed = true;
    state.setLive(false);
    wake();
    await current?.end({ timeout: 0 }).catch(() => {});
  });
}

/** Listens in the embedded database: same process, same clock, a connection that cannot drop. */
export async function listenPglite(client: PGlite, options: Pick<FeedOptions, "now"> = {}): Promise<ChangeFeed> {
  const state = feedState(options.now ?? Date.now);
  const unlisten = await client.listen(CHANGES_CHANNEL, (payload) => state.change(payload));
  const clockSql = "select extract(epoch from clock_timestamp()) * 1000 as db_ms";
  await state.readClock(async () => Number((await client.query<{ db_ms: number }>(clockSql)).rows[0]?.db_ms));
  state.setLive(true);
  return state.feed(async () => {
    state.setLive(false);
    await unlisten().catch(() => {});
  });
}
