// `bun run soak`: the production topology for minutes under a steady mixed load. Three replicas as real
// processes, started at the same moment, their pools through a real PgBouncer in transaction pooling
// with stock settings (ignore_startup_parameters = extra_float_digits) and fewer server connections
// than the replicas' pools, LISTEN and migrations direct to PostgreSQL, the timeouts set on the
// service's role as production does (so, once PgBouncer has refused them as startup parameters, the
// pool sends its statements as they are); claims, keyed claims and their replays, releases, pauses and
// resumes, and reads on many coupons at once, with every periodic job (the key sweep, the change
// feed's heartbeat) on a short interval so each runs many times. Not part of `bun test` (its name
// matches no test pattern): CI runs it once, as a step of its own.
// Env: SOAK_SECONDS (the measured load, default 180), SOAK_SEED (the clients' choices; printed).
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import postgres from "postgres";
import { createTestDatabase, type TestDatabase } from "../support/database";
import type { Client } from "../support/http";
import { expectStockInvariant } from "../support/invariant";
import { findPgBouncer, type PgBouncer, STOCK_IGNORED_PARAMETERS, startPgBouncer } from "../support/pgbouncer";
import { type Service, startService } from "../support/service";

const SOAK_SECONDS = Number(process.env.SOAK_SECONDS ?? 180);
const SEED = Number(process.env.SOAK_SEED ?? Date.now() % 1_000_000);
const WINDOW_MS = 10_000;
const WINDOWS = Math.floor((SOAK_SECONDS * 1000) / WINDOW_MS);
// Load before the first window, not counted: the JIT, the first connections and sweeps, fresh tables.
const WARMUP_MS = 30_000;
const REPLICAS = 3;
const REPLICA_POOL = 6;
// PgBouncer's server connections for the service's database: fewer than the replicas' 18.
const SERVER_POOL = 4;
const CLIENTS = 96;
const HOT = Array.from({ length: 24 }, (_, i) => `hot-${i}`);
// Small coupons the reads go to, so that a read costs the same in the last window as in the first.
const SHELF = Array.from({ length: 4 }, (_, i) => `shelf-${i}`);
// The service's own role, owner of its database, with the timeouts of DATABASE_STATEMENT_TIMEOUT_MS
// (5000, the default) on it, as deploy/kubernetes/overlays/production sets them.
const ROLE = `coupons_soak_${Math.random().toString(36).slice(2, 8)}`;
const ROLE_SETTINGS = {
  statement_timeout: "5000ms",
  lock_timeout: "5000ms",
  idle_in_transaction_session_timeout: "10000ms",
};
const ADMIN_TOKEN = "soak-admin-token-0123456789";
const ADMIN = { authorization: `Bearer ${ADMIN_TOKEN}` };

if (!findPgBouncer()) throw new Error("the soak needs pgbouncer (apt-get install pgbouncer)");

/** A small deterministic generator (mulberry32), so a run can be repeated with its seed. */
function random(seed: number) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

type Op = "claim" | "keyed" | "replay" | "release" | "pause" | "resume" | "read";
interface Answer {
  op: Op;
  /** The status; a replay that is not the first answer again is recorded negated. */
  status: number;
  code?: string;
  /** ms since the first window began (negative in the warm-up). */
  at: number;
}
/** A claim acknowledged 201, and what the client was told after: a release 200, or no answer. */
interface Holding {
  coupon: string;
  user: string;
  state: "held" | "released" | "unknown";
}
/** PgBouncer's SHOW POOLS for the service's database, and the machine's load average then. */
interface PoolSample {
  at: number;
  loadavg: number;
  cl_active: number;
  cl_waiting: number;
  sv_active: number;
  sv_idle: number;
}

/** What the run saw, for the checks below. */
const seen = {
  answers: [] as Answer[],
  holdings: [] as Holding[],
  readiness: [] as { at: number; replica: number; status: number }[],
  pools: [] as PoolSample[],
  keysStored: 0,
  /** The database's clock (epoch ms) when the first window began. */
  firstWindowAt: 0,
};

let database: TestDatabase;
let bouncer: PgBouncer;
let adminConsole: postgres.Sql;
let replicas: Service[] = [];

/** The service database's row of SHOW POOLS (the admin console speaks only the simple protocol). */
async function showPools(): Promise<Omit<PoolSample, "at" | "loadavg">> {
  const rows = await adminConsole`show pools`.simple();
  const name = new URL(database.url).pathname.slice(1);
  const row = rows.find((r) => r.database === name) ?? {};
  const n = (key: string) => Number(row[key] ?? 0);
  return { cl_active: n("cl_active"), cl_waiting: n("cl_waiting"), sv_active: n("sv_active"), sv_idle: n("sv_idle") };
}

/** One client until `end`: a mix of every kind of request, on a replica picked at random each time. */
async function client(id: number, apis: Client[], end: number, since: () => number): Promise<void> {
  const next = random(SEED * 1000 + id);
  const pick = <T>(list: readonly T[]) => list[Math.floor(next() * list.length)] as T;
  const record = (op: Op, status: number, code?: string) => seen.answers.push({ op, status, code, at: since() });
  const held: Holding[] = []; // this client's claims not released yet, oldest first
  const hold = (coupon: string, user: string) => {
    const holding: Holding = { coupon, user, state: "held" };
    seen.holdings.push(holding);
    held.push(holding);
  };
  for (let n = 0; performance.now() < end; n++) {
    const api = pick(apis);
    const dice = next();
    const coupon = pick(HOT);
    const user = `c${id}-${n}`;
    if (dice < 0.55) {
      const res = await api.claim(user, coupon);
      record("claim", res.status, res.body?.code);
      if (res.status === 201) hold(coupon, user);
    } else if (dice < 0.75) {
      const headers = { "idempotency-key": `soak-${SEED}-${id}-${n}` };
      const body = { user_id: user, coupon_name: coupon };
      const res = await api.post("/api/coupons/claim", body, headers);
      record("keyed", res.status, res.body?.code);
      if (res.status !== 201) continue;
      seen.keysStored++;
      hold(coupon, user);
      if (next() < 0.3) {
        // A client that lost the answer retries, on any replica: the first answer again.
        const replay = await pick(apis).post("/api/coupons/claim", body, headers);
        const same =
          replay.headers.get("idempotent-replayed") === "true" && replay.body?.claimed_at === res.body.claimed_at;
        record("replay", same ? replay.status : -replay.status, replay.body?.code);
      }
    } else if (dice < 0.87) {
      const oldest = held.shift();
      if (!oldest) continue;
      const path = `/api/coupons/${encodeURIComponent(oldest.coupon)}/claims/${encodeURIComponent(oldest.user)}`;
      const res = await api.call("DELETE", path, { headers: ADMIN });
      record("release", res.status, res.body?.code);
      oldest.state = res.status === 200 ? "released" : "unknown";
    } else if (dice < 0.9) {
      const path = `/api/coupons/${encodeURIComponent(coupon)}`;
      const paused = await api.call("PATCH", path, { json: { active: false }, headers: ADMIN });
      record("pause", paused.status, paused.body?.code);
      const resumed = await pick(apis).call("PATCH", path, { json: { active: true }, headers: ADMIN });
      record("resume", resumed.status, resumed.body?.code);
    } else {
      const res = await api.getCoupon(pick(SHELF));
      record("read", res.status, res.body?.code);
    }
  }
}

/** The 1-minute load average (Linux), printed with each window: what else the machine was running. */
function loadAverage(): number {
  return existsSync("/proc/loadavg") ? Number(readFileSync("/proc/loadavg", "utf8").split(" ")[0]) : Number.NaN;
}

/** Every 500 ms until `end`: each replica's readiness, and PgBouncer's pool. */
async function probe(apis: Client[], end: number, since: () => number): Promise<void> {
  while (performance.now() < end) {
    const at = since();
    const statuses = await Promise.all(apis.map((api) => api.get("/health/ready").then((r) => r.status)));
    statuses.forEach((status, replica) => void seen.readiness.push({ at, replica, status }));
    seen.pools.push({ at, loadavg: loadAverage(), ...(await showPools()) });
    await Bun.sleep(500);
  }
}

/** The answers and pool samples of window `i`. */
function inWindow<T extends { at: number }>(items: T[], i: number): T[] {
  return items.filter((item) => item.at >= i * WINDOW_MS && item.at < (i + 1) * WINDOW_MS);
}

describe(`the production topology for ${SOAK_SECONDS} s (seed ${SEED})`, () => {
  beforeAll(
    async () => {
      database = await createTestDatabase({ migrate: false });
      const name = new URL(database.url).pathname.slice(1);
      // A password, for servers that ask one over TCP (CI's container); PgBouncer logs in with it.
      await database.sql.unsafe(`create role ${ROLE} login password 'soak'`);
      await database.sql.unsafe(`alter database ${name} owner to ${ROLE}`);
      for (const [setting, value] of Object.entries(ROLE_SETTINGS))
        await database.sql.unsafe(`alter role ${ROLE} in database ${name} set ${setting} = '${value}'`);
      const direct = new URL(database.url);
      direct.username = ROLE;
      direct.password = "soak";
      bouncer = await startPgBouncer(direct.href, {
        poolSize: SERVER_POOL,
        ignoreStartupParameters: STOCK_IGNORED_PARAMETERS,
      });
      adminConsole = postgres(bouncer.adminUrl, { max: 1, fetch_types: false, onnotice: () => {} });
      const env = {
        DATABASE_URL: bouncer.url,
        LISTEN_DATABASE_URL: direct.href,
        MIGRATION_DATABASE_URL: direct.href,
        DATABASE_POOL_MAX: String(REPLICA_POOL),
        ADMIN_TOKEN,
        IDEMPOTENCY_TTL: "2s",
        IDEMPOTENCY_SWEEP_MS: "500",
        // The change feed's heartbeat, every quarter of it.
        MEMORY_LEASE_MS: "200",
        LOG_REQUESTS: "errors",
      };
      // At the same moment, on an empty database: each migrates and self-tests beside the others.
      replicas = await Promise.all(Array.from({ length: REPLICAS }, () => startService(env)));
      const apis = replicas.map((replica) => replica.api);
      for (const name of [...HOT, ...SHELF]) {
        const amount = name.startsWith("hot") ? 1_000_000_000 : 1000;
        expect((await apis[0]?.createCoupon(name, amount, ADMIN))?.status).toBe(201);
      }
      for (const name of SHELF)
        for (let i = 0; i < 50; i++) expect((await apis[0]?.claim(`shelf-${i}`, name))?.status).toBe(201);

      const [clock] = await database.sql<{ ms: string }[]>`select (extract(epoch from now()) * 1000)::bigint as ms`;
      seen.firstWindowAt = Number(clock?.ms) + WARMUP_MS;
      const firstWindow = performance.now() + WARMUP_MS;
      const since = () => performance.now() - firstWindow;
      const end = firstWindow + WINDOWS * WINDOW_MS;
      const clients = Array.from({ length: CLIENTS }, (_, id) => client(id, apis, end, since));
      await Promise.all([...clients, probe(apis, end, since)]);
    },
    2 * (WARMUP_MS + SOAK_SECONDS * 1000) + 60_000,
  );

  afterAll(async () => {
    for (const replica of replicas) replica.child.kill("SIGKILL");
    await Promise.all(replicas.map((replica) => replica.child.exited));
    await adminConsole?.end();
    await bouncer?.stop();
    await database?.drop();
    const admin = postgres(process.env.TEST_DATABASE_URL as string, { max: 1, onnotice: () => {} });
    await admin.unsafe(`drop role if exists ${ROLE}`);
    await admin.end();
  }, 30_000);

  it("sends its statements as they are: PgBouncer refused the timeouts at connect, the role has them", () => {
    for (const replica of replicas) {
      const line = replica.logs().find((l) => l.msg?.startsWith("database timeouts"));
      expect(line).toMatchObject({
        level: "info",
        msg: "database timeouts applied by the server's settings",
        refused: "unsupported startup parameter: statement_timeout",
        source: "database user",
      });
    }
  });

  it("keeps committing: claims per 10 s window never fall below half of the first window's", async () => {
    // Committed claims, by the database's clock: the current holders and the released ones.
    const rows = await database.sql<{ window: number; committed: number }[]>`
      select floor((extract(epoch from at) * 1000 - ${seen.firstWindowAt}) / ${WINDOW_MS})::int as window,
             count(*)::int as committed
      from (select created_at as at from claims where coupon_name like 'hot-%'
            union all select claimed_at from claim_releases where coupon_name like 'hot-%') c
      group by 1`;
    const committed = Array.from({ length: WINDOWS }, (_, i) => rows.find((r) => r.window === i)?.committed ?? 0);
    console.log(
      `soak: ${REPLICAS} replicas, pools of ${REPLICA_POOL}, through PgBouncer with ${SERVER_POOL} server connections; ${CLIENTS} clients; seed ${SEED}`,
    );
    console.table(
      committed.map((count, i) => {
        const answers = inWindow(seen.answers, i);
        const number = (op: Op, status: number) => answers.filter((a) => a.op === op && a.status === status).length;
        const pools = inWindow(seen.pools, i);
        return {
          window: `${(i * WINDOW_MS) / 1000}-${((i + 1) * WINDOW_MS) / 1000} s`,
          "committed/s": Math.round(count / (WINDOW_MS / 1000)),
          "201s": number("claim", 201) + number("keyed", 201),
          replays: number("replay", 201),
          releases: number("release", 200),
          pauses: number("pause", 200),
          reads: number("read", 200),
          "503s": answers.filter((a) => a.status === 503).length,
          "all server conns busy": `${pools.filter((p) => p.sv_idle === 0 && p.sv_active > 0).length}/${pools.length}`,
          "max cl_waiting": Math.max(0, ...pools.map((p) => p.cl_waiting)),
          "load avg": pools.at(-1)?.loadavg,
        };
      }),
    );
    const first = committed[0] ?? 0;
    expect(first).toBeGreaterThan(0);
    expect(committed.filter((count) => count < first / 2)).toEqual([]);
    // Enough load that the pooler queued clients: every server connection was taken.
    expect(seen.pools.some((p) => p.cl_waiting > 0)).toBe(true);
  });

  it("stays ready: /health/ready of every replica answered 200 at every poll", () => {
    expect(seen.readiness.length).toBeGreaterThan(WINDOWS * REPLICAS);
    expect(seen.readiness.filter((poll) => poll.status !== 200)).toEqual([]);
  });

  it("answers every request as the rules say: no 5xx, a replay is its first answer, only pauses refuse claims", () => {
    const outcomes: Record<string, number> = {};
    for (const { op, status, code } of seen.answers) {
      const outcome = `${op} ${status}${code ? ` ${code}` : ""}`;
      outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
    }
    console.log("answers:", outcomes);
    // A 503 is a claim not confirmed: under a steady load on a healthy topology, nothing stalls that long.
    expect(seen.answers.filter((a) => Math.abs(a.status) >= 500)).toEqual([]);
    expect(seen.answers.filter((a) => a.op === "replay" && a.status < 0)).toEqual([]);
    expect(seen.answers.filter((a) => a.status === 409 && a.code !== "SALE_PAUSED")).toEqual([]);
  });

  it("stores every acknowledged claim and no released one; stock + claims = amount on every coupon", async () => {
    const holders = await database.sql<{ coupon_name: string; user_id: string }[]>`
      select coupon_name, user_id from claims where coupon_name like 'hot-%'`;
    const released = await database.sql<{ coupon_name: string; user_id: string }[]>`
      select coupon_name, user_id from claim_releases where coupon_name like 'hot-%'`;
    const held = new Set(holders.map((row) => `${row.coupon_name}/${row.user_id}`));
    const gone = new Set(released.map((row) => `${row.coupon_name}/${row.user_id}`));
    const at = (h: Holding) => `${h.coupon}/${h.user}`;
    const releasedSince = seen.holdings.filter((h) => h.state === "released");
    console.log(`acknowledged claims: ${seen.holdings.length}, ${releasedSince.length} of them released since`);
    expect(seen.holdings.length).toBeGreaterThan(0);
    expect(seen.holdings.filter((h) => h.state === "held" && !held.has(at(h)))).toEqual([]);
    expect(releasedSince.filter((h) => held.has(at(h)) || !gone.has(at(h)))).toEqual([]);
    for (const name of [...HOT, ...SHELF]) await expectStockInvariant(database.sql, name);
  });

  it("sweeps expired Idempotency-Keys as it goes: none expired for long is left", async () => {
    const [row] = await database.sql<{ left: number; stale: number }[]>`
      select count(*)::int as left,
             (count(*) filter (where expires_at < now() - interval '5 seconds'))::int as stale
      from idempotency_keys`;
    console.log(`Idempotency-Keys: ${seen.keysStored} stored, ${row?.left} left`);
    expect(seen.keysStored).toBeGreaterThan(1000);
    expect(row?.stale).toBe(0);
    expect(row?.left ?? seen.keysStored).toBeLessThan(seen.keysStored / 10);
  });

  it("leaves no client waiting for a server connection, and no statement running", async () => {
    let pool = await showPools();
    for (let waited = 0; pool.cl_waiting > 0 && waited < 10_000; waited += 200) {
      await Bun.sleep(200);
      pool = await showPools();
    }
    expect(pool.cl_waiting).toBe(0);
    const running = await database.sql<{ pid: number; query: string }[]>`
      select pid, query from pg_stat_activity
      where datname = current_database() and pid <> pg_backend_pid() and state = 'active'
        and now() - query_start > interval '3 seconds'`;
    expect([...running]).toEqual([]);
  });
});
