// A mixed load on a few coupons, recorded as a history: concurrent clients claiming (with and without
// Idempotency-Keys, replaying earlier keys), releasing and reading through random replicas, while an
// admin pauses, resumes and moves the sales' bounds a few hundred ms ahead (so they pass during the
// run), and a fault loop cuts or stalls one replica's database connections now and then.
import type { FaultProxy } from "../proxy";
import { seeded } from "./generate";

type Random = ReturnType<typeof seeded>;

import type { Request } from "./history";
import type { Recorder } from "./recorder";

export interface LoadOptions {
  seed: number;
  /** Coupon names start with it (one database serves several runs). */
  prefix: string;
  durationMs: number;
  /** Concurrent clients, each sending one request at a time. */
  clients: number;
  replicas: number;
  /** With an admin per scheduled coupon: one whose sale ends and is extended, one paused and rescheduled. */
  schedules: boolean;
  /** Cut or stalled now and then: the last replica's database connections. */
  faults?: FaultProxy;
  /**
   * Share of the requests that are releases, for every coupon (default per coupon, about a fifth). A
   * release fences its coupon for the lease: no replica learns it meanwhile, so fewer releases leave
   * more time for answers from memory.
   */
  releases?: number;
  /** The replicas' request deadline: a stall outlasts it, so requests on that replica answer 503. */
  timeoutMs: number;
}

const USERS = 8;

/** Runs the load until its duration is over and every request is answered, then reads each coupon on each replica. */
export async function runLoad(recorder: Recorder, options: LoadOptions): Promise<void> {
  // Each loop draws from a stream of its own, so its choices do not depend on how the loops interleave.
  const stream = (loop: number) => seeded(options.seed * 1000 + loop);
  const { prefix } = options;
  const at = (inMs: number) => new Date(Math.round(recorder.now() + inMs)).toISOString();
  // Per coupon: its share of the requests, of them keyed, and of them releases. The sale that ends
  // is seldom released, so it stays sold out while its end passes.
  const coupons = [
    { name: `${prefix}-stock`, amount: 3, weight: 3, keyed: 0.15, releases: 0.22 },
    { name: `${prefix}-keys`, amount: 3, weight: 2, keyed: 0.7, releases: 0.22 },
    ...(options.schedules
      ? [
          { name: `${prefix}-ending`, amount: 3, weight: 2, keyed: 0.15, releases: 0.03, sale: { ends_at: at(900) } },
          { name: `${prefix}-sale`, amount: 4, weight: 3, keyed: 0.2, releases: 0.15, sale: { starts_at: at(300) } },
        ]
      : []),
  ];
  if (options.releases !== undefined) for (const c of coupons) c.releases = options.releases;
  const weighted = coupons.flatMap((c) => Array.from({ length: c.weight }, () => c));
  // Each coupon created twice at once, once with a key (replayed after the run).
  const createOf = (c: (typeof coupons)[number]): Request => ({ kind: "create", amount: c.amount, ...c.sale });
  await Promise.all(
    coupons.flatMap((c, i) => [
      recorder.send(i % options.replicas, c.name, createOf(c), `${c.name}-create`),
      recorder.send((i + 1) % options.replicas, c.name, createOf(c)),
    ]),
  );

  const end = recorder.now() + options.durationMs;
  const running = () => recorder.now() < end;
  const keys = new Map<string, { key: string; request: Request }[]>(coupons.map((c) => [c.name, []]));
  let fresh = 0;
  const client = async (_: unknown, i: number) => {
    const r = stream(1 + i);
    while (running()) {
      const coupon = r.pick(weighted);
      const user = `u${r.int(USERS)}`;
      const kind = r.next();
      let request: Request =
        kind < coupon.releases ? { kind: "release", user } : kind < 0.82 ? { kind: "claim", user } : { kind: "read" };
      let key: string | undefined;
      const earlier = keys.get(coupon.name) as { key: string; request: Request }[];
      if (request.kind !== "read" && r.chance(coupon.keyed)) {
        const again = earlier.length > 0 && r.chance(0.35) ? r.pick(earlier) : undefined;
        if (again && r.chance(0.9)) request = again.request; // the same request again: its first answer, replayed
        key = again?.key ?? `${prefix}-k${fresh++}`;
        if (!again) earlier.push({ key, request });
      }
      await recorder.send(r.int(options.replicas), coupon.name, request, key);
      await Bun.sleep(r.int(4));
    }
  };
  // An admin makes its changes in turn, so each happens in every run.
  const admin = async (loop: number, name: string, changes: ((r: Random) => Request)[]) => {
    const r = stream(loop);
    for (let turn = 0; running(); turn++) {
      await Bun.sleep(300 + r.int(500));
      const change = (changes[turn % changes.length] as (r: Random) => Request)(r);
      await recorder.send(r.int(options.replicas), name, change);
      if (change.kind === "patch" && change.active === false) {
        await Bun.sleep(100 + r.int(200));
        await recorder.send(r.int(options.replicas), name, { kind: "patch", active: true });
      }
    }
  };
  const faults = async (proxy: FaultProxy) => {
    const r = stream(99);
    for (let turn = 0; running(); turn++) {
      await Bun.sleep(600 + r.int(700));
      if (!running()) break;
      // A cut fails what is in flight at once; a stall outlasts the deadline, and what it held goes on
      // after. The first fault is a stall, so every run has one.
      const cut = turn > 0 && r.chance(0.5);
      if (cut) proxy.cut();
      else proxy.stall();
      if (cut) await Bun.sleep(60 + r.int(120));
      else {
        // Once the stalled replica's lease has run out (it hears nothing) its claims go to the database
        // and wait there: one such claim each stall, so every run has claims of unknown effect.
        await Bun.sleep(options.timeoutMs / 2);
        const pending = recorder.send(options.replicas - 1, coupons[0]?.name as string, {
          kind: "claim",
          user: `u${r.int(USERS)}`,
        });
        await Bun.sleep(options.timeoutMs / 2 + 100);
        void pending;
      }
      proxy.restore();
    }
  };
  const admins = options.schedules
    ? [
        admin(97, `${prefix}-ending`, [
          (r) => ({ kind: "patch", ends_at: at(300 + r.int(400)) }),
          (r) => ({ kind: "patch", starts_at: at(200 + r.int(200)), ends_at: at(800 + r.int(400)) }),
        ]),
        admin(98, `${prefix}-sale`, [
          () => ({ kind: "patch", active: false }),
          (r) => ({ kind: "patch", starts_at: at(200 + r.int(300)), ends_at: at(1500 + r.int(1000)) }),
          (r) => ({ kind: "patch", starts_at: at(2200 + r.int(800)) }),
          () => ({ kind: "patch", starts_at: null, ends_at: null }),
        ]),
      ]
    : [];
  await Promise.all([
    ...Array.from({ length: options.clients }, client),
    ...admins,
    ...(options.faults ? [faults(options.faults)] : []),
  ]);
  options.faults?.restore();

  for (const [i, c] of coupons.entries()) {
    await recorder.send((i + 2) % options.replicas, c.name, createOf(c), `${c.name}-create`);
    for (let replica = 0; replica < options.replicas; replica++) await recorder.send(replica, c.name, { kind: "read" });
  }
}
