// The cross-replica channel that tells every instance a coupon changed: PostgreSQL LISTEN/NOTIFY on a
// connection of its own. A change is announced with pg_notify inside the transaction that makes it
// (and before it, by its fence: store/fences.ts), so it reaches every listening instance once that
// commits, and never if it rolls back. What a replica answers from memory (engine/answers.ts) is only
// as good as this channel, so it answers only under a lease (Gray and Cheriton's): each heartbeat
// sends a probe notification and takes its send time; once the probe comes back, every notification
// committed before that time has been heard, and memory may answer for `leaseMs` from it. A writer
// that waits `leaseMs` after its fence committed (store/fences.ts) knows every replica has either
// heard the fence or stopped answering from memory. While the channel is down nothing is answered
// from memory: a change made meanwhile would be missed.
import type { PGlite } from "@electric-sql/pglite";
import { sql } from "drizzle-orm";
import postgres from "postgres";
import { errorFields, type Logger } from "../log";
import { type PostgresOptions, postgresOptions } from "./connect";
import { withDeadline } from "./deadline";

export const CHANGES_CHANNEL = "coupon_changes";

/** The statement that announces a change of `couponName`; run it inside the transaction that changes it. */
export const announceChange = (couponName: string) => sql`select pg_notify(${CHANGES_CHANNEL}, ${couponName})`;

/**
 * The database's clock as this process knows it: read on the listening connection, then carried
 * forward on the monotonic clock, so a step of this host's clock (NTP, an operator) moves nothing.
 */
export interface DatabaseClock {
  /** The database's time now, epoch ms; the truth is within ± uncertaintyMs of it. */
  now(): number;
  /** Half the round trip of the last reading. */
  readonly uncertaintyMs: number;
  /** The database's clock minus this host's wall clock, at the last reading: shown, never decided on. */
  readonly offsetMs: number;
}

export interface ChangeListener {
  /** `couponName` changed, or is about to (its fence), in a committed transaction. */
  change(couponName: string): void;
  /** Listening was lost: changes may be missed from now until `live` is true again. */
  lost(): void;
}

export interface ChangeFeed {
  /** True while listening: every change committed from now on reaches the listeners. */
  readonly live: boolean;
  /** True while answers from memory are allowed: live, and the lease of the last probe heard holds. */
  leased(): boolean;
  /**
   * How long a change must wait after its fence committed before it is made: by then every replica
   * has heard the fence or its lease has run out. 0 where there is one process (the embedded database).
   */
  readonly leaseMs: number;
  readonly clock: DatabaseClock;
  subscribe(listener: ChangeListener): void;
  close(): Promise<void>;
}

export interface FeedOptions {
  /** MEMORY_LEASE_MS: how long a probe heard allows answers from memory (0: never). */
  leaseMs: number;
  /** How often the lease is renewed and the clock read again (default a quarter of the lease). */
  heartbeatMs?: number;
  /**
   * Sends `payload` on the channel from another session than the listening one. Only a notification
   * from elsewhere proves that changes reach this connection (a transaction pooler accepts LISTEN and
   * then delivers nothing); without it the listening connection notifies itself.
   */
  probe?: (payload: string) => Promise<unknown>;
  log: Logger;
  /** This host's wall clock, for the offset the metric shows; replaceable so tests can skew it. */
  wallClock?: () => number;
}

/** The listeners, lease and clock of one feed, and the ChangeFeed that reports them. */
function feedState(leaseMs: number, wallClock: () => number) {
  const listeners: ChangeListener[] = [];
  let reading = { databaseMs: wallClock(), at: performance.now(), uncertaintyMs: 0, offsetMs: 0 };
  let leaseUntil = Number.NEGATIVE_INFINITY;
  const clock: DatabaseClock = {
    now: () => reading.databaseMs + (performance.now() - reading.at),
    get uncertaintyMs() {
      return reading.uncertaintyMs;
    },
    get offsetMs() {
      return reading.offsetMs;
    },
  };
  const state = {
    live: false,
    clock,
    subscribe: (listener: ChangeListener) => void listeners.push(listener),
    change: (couponName: string) => {
      for (const listener of listeners) listener.change(couponName);
    },
    setLive(up: boolean) {
      if (!up) leaseUntil = Number.NEGATIVE_INFINITY;
      if (state.live === up) return;
      state.live = up;
      if (!up) for (const listener of listeners) listener.lost();
    },
    /** A probe sent at `sentAt` (performance.now()) came back: memory may answer until sentAt + leaseMs. */
    renew(sentAt: number) {
      if (state.live) leaseUntil = Math.max(leaseUntil, sentAt + leaseMs);
    },
    /** Reads the database's clock (epoch ms) with `read`. */
    async readClock(read: () => Promise<number>) {
      const before = performance.now();
      const databaseMs = await read();
      const after = performance.now();
      const half = (after - before) / 2;
      reading = { databaseMs, at: before + half, uncertaintyMs: half, offsetMs: databaseMs - (wallClock() - half) };
    },
    /** The ChangeFeed that reports this state; `close` stops whatever feeds it. */
    feed(
      close: () => Promise<void>,
      leased = () => state.live && performance.now() < leaseUntil,
      reportedClock = clock,
    ): ChangeFeed {
      return {
        get live() {
          return state.live;
        },
        leased,
        leaseMs,
        clock: reportedClock,
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
 * reading and a probe succeeded, and stops being live the moment it closes or a heartbeat (the same
 * reading and probe) goes unanswered.
 */
export function listenPostgres(url: string, config: PostgresOptions, options: FeedOptions): ChangeFeed {
  const { log } = options;
  const { leaseMs } = options;
  // With no lease (MEMORY_LEASE_MS=0: nothing answered from memory) the heartbeat only checks the connection.
  const heartbeatMs = options.heartbeatMs ?? (leaseMs > 0 ? Math.max(10, leaseMs / 4) : 5000);
  const timeoutMs = Math.max(config.DATABASE_CONNECT_TIMEOUT_MS, 1000);
  const state = feedState(leaseMs, options.wallClock ?? (() => Date.now()));
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
      const [row] = await withDeadline(
        client`select ${1}::int as n, extract(epoch from clock_timestamp()) * 1000 as db_ms`,
        timeoutMs,
      );
      return Number(row?.db_ms);
    });

  // A probe's payload starts with a control character, which no coupon name may contain.
  let awaited: { payload: string; heard: () => void } | undefined;
  /** Sends a probe and waits for it to come back; returns when it was sent, where its lease starts. */
  async function echo(client: postgres.Sql): Promise<number> {
    const payload = `\u0001probe ${crypto.randomUUID()}`;
    const heard = new Promise<void>((resolve) => {
      awaited = { payload, heard: resolve };
    });
    // Taken before the probe leaves: it commits after this instant, so once it is heard, so is every
    // notification committed before it.
    const sentAt = performance.now();
    const send = options.probe ? options.probe(payload) : client`select pg_notify(${CHANGES_CHANNEL}, ${payload})`;
    try {
      await withDeadline(Promise.all([send, heard]), timeoutMs);
    } catch (error) {
      throw new Error(
        "a notification sent from another session did not reach the listening connection (behind a transaction pooler, set LISTEN_DATABASE_URL to the server itself)",
        { cause: error },
      );
    }
    return sentAt;
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
        // No timeouts as startup parameters: its statements carry deadlines of their own, and a pooler
        // in front of it (a misconfiguration the probe reports by name) must not refuse it first.
        connection: { application_name: "coupon-service" },
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
        const sentAt = await echo(client);
        if (!dropped && !closed) {
          state.setLive(true);
          state.renew(sentAt);
          log.info("change feed live", { clock_offset_ms: Math.round(state.clock.offsetMs), lease_ms: leaseMs });
          quiet = false;
          attempt = 0;
        }
        while (!dropped && !closed) {
          await nap(heartbeatMs);
          if (dropped || closed) break;
          await readClock(client);
          state.renew(await echo(client));
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

/**
 * Listens in the embedded database: one process, so nothing to lease (a change is heard before its
 * writer goes on), and the database's clock is this process's wall clock itself.
 */
export async function listenPglite(client: PGlite, options: Pick<FeedOptions, "wallClock"> = {}): Promise<ChangeFeed> {
  const wallClock = options.wallClock ?? (() => Date.now());
  const state = feedState(0, wallClock);
  const unlisten = await client.listen(CHANGES_CHANNEL, (payload) => state.change(payload));
  state.setLive(true);
  const clock: DatabaseClock = { now: wallClock, uncertaintyMs: 0, offsetMs: 0 };
  const close = async () => {
    state.setLive(false);
    await unlisten().catch(() => {});
  };
  return state.feed(close, () => state.live, clock);
}
