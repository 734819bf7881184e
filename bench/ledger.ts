// The correctness checks of `bun run bench` (bench/run.ts): no answer a correct service cannot give,
// and every coupon's ledger, in PostgreSQL and in the Redis+Lua peer's Redis.
import { RedisClient } from "bun";
import postgres from "postgres";
import { HOT_STOCK, type Run } from "./scenarios";

/** Answers that are impossible for a correct service: ALREADY_CLAIMED for fresh users, 409 on a huge stock, a 201 after sold out, 500. */
export function checkAnswers(runs: Run[]): string[] {
  const problems: string[] = [];
  for (const run of runs) {
    const name = `${run.scenario.id}/${run.phase}`;
    const count = (status: string) => run.result.statuses[status] ?? 0;
    if (count("409 ALREADY_CLAIMED") > 0)
      problems.push(`${name}: ${count("409 ALREADY_CLAIMED")} ALREADY_CLAIMED for distinct users`);
    if (run.scenario.kind === "hot" && count("409 SOLD_OUT") > 0) problems.push(`${name}: SOLD_OUT with stock left`);
    if (run.scenario.kind === "soldout" && count("201") > 0)
      problems.push(`${name}: ${count("201")} claims created after sold out`);
    if (count("500 INTERNAL_ERROR") > 0) problems.push(`${name}: ${count("500 INTERNAL_ERROR")} internal errors`);
    if (run.result.requests === 0) problems.push(`${name}: no answer at all`);
  }
  return problems;
}

/** Stock ledger per coupon (remaining + claims = amount) and wrk's 201s against the claim rows. */
export async function checkLedger(databaseUrl: string, runs: Run[]): Promise<string[]> {
  const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  try {
    const rows = await sql<{ name: string; amount: number; remaining: number; claims: number }[]>`
      select c.name, c.amount, c.remaining_amount as remaining, count(cl.id)::int as claims
      from coupons c left join claims cl on cl.coupon_name = c.name
      group by c.name order by c.name`;
    const problems: string[] = [];
    console.log("\nCorrectness (per coupon): amount = remaining + claim rows; claim rows = seed + wrk 201s");
    for (const row of rows) {
      const run = runs.find((candidate) => candidate.coupon === row.name);
      const created = run ? (run.result.statuses["201"] ?? 0) : 0;
      const seeded = run?.seeded ?? 0;
      const unanswered = run?.result.unanswered ?? 0;
      const ledgerOk = row.remaining + row.claims === row.amount;
      // A claim committed while wrk was stopping has a row but no counted 201: allow up to `unanswered`.
      const extra = row.claims - seeded - created;
      const countOk = run !== undefined && extra >= 0 && extra <= unanswered;
      console.log(
        `  ${ledgerOk && countOk ? "PASS" : "FAIL"} ${row.name}: amount ${row.amount} = remaining ${row.remaining} + claims ${row.claims}` +
          ` (${ledgerOk ? "ok" : "VIOLATED"}); claims ${row.claims} = seed ${seeded} + 201s ${created}` +
          (extra === 0
            ? " exactly"
            : ` + ${extra} committed while in flight at wrk's stop (unanswered: ${unanswered})`),
      );
      if (!ledgerOk)
        problems.push(`${row.name}: remaining ${row.remaining} + claims ${row.claims} != amount ${row.amount}`);
      if (!countOk)
        problems.push(
          `${row.name}: ${row.claims} claim rows for ${seeded} seeded + ${created} 201s (${unanswered} unanswered)`,
        );
    }
    for (const run of runs) {
      if (run.coupon && !run.scenario.peer && !rows.some((row) => row.name === run.coupon))
        problems.push(`${run.coupon}: coupon missing`);
    }
    // Every claim made with a key stored its answer in the same transaction: one key row per claim row.
    for (const run of runs.filter((candidate) => candidate.scenario.keys && candidate.coupon)) {
      const coupon = run.coupon as string;
      const [keys] = await sql<{ count: number }[]>`
        select count(*)::int as count from idempotency_keys where key like ${`${coupon}-t%`} and outcome = 'created'`;
      const claims = rows.find((row) => row.name === coupon)?.claims ?? -1;
      const ok = keys?.count === claims;
      console.log(`  ${ok ? "PASS" : "FAIL"} ${coupon}: stored keys ${keys?.count} = claim rows ${claims}`);
      if (!ok) problems.push(`${coupon}: ${keys?.count} stored keys for ${claims} claim rows`);
    }
    return problems;
  } finally {
    await sql.end();
  }
}

/** The peer's ledger in Redis, per coupon: stock + holders = amount, holders = seed + wrk's 201s. */
export async function checkPeerLedger(redisUrl: string, prefix: string, runs: Run[]): Promise<string[]> {
  const client = new RedisClient(redisUrl);
  const problems: string[] = [];
  try {
    for (const run of runs.filter((candidate) => candidate.scenario.peer && candidate.coupon)) {
      const coupon = run.coupon as string;
      const amount = run.scenario.kind === "hot" ? HOT_STOCK : 1;
      const stock = Number(await client.send("GET", [`${prefix}:{${coupon}}:stock`]));
      const holders = Number(await client.send("SCARD", [`${prefix}:{${coupon}}:holders`]));
      const created = run.result.statuses["201"] ?? 0;
      const extra = holders - run.seeded - created;
      const ok = stock + holders === amount && extra >= 0 && extra <= run.result.unanswered;
      console.log(
        `  ${ok ? "PASS" : "FAIL"} peer ${coupon}: amount ${amount} = stock ${stock} + holders ${holders}; holders = seed ${run.seeded} + 201s ${created}${extra === 0 ? " exactly" : ` + ${extra} in flight at wrk's stop`}`,
      );
      if (!ok)
        problems.push(`peer ${coupon}: stock ${stock} + holders ${holders} for amount ${amount}, ${created} 201s`);
    }
  } finally {
    client.close();
  }
  return problems;
}
