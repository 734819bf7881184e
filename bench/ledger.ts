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

/** One coupon's books: its amount, what is left of it, and what was taken (claim rows, or the peer's holders). */
interface Books {
  name: string;
  amount: number;
  left: number;
  taken: number;
}

/** How a store names the two sides of its books, in the printed lines. */
interface Words {
  store: string;
  left: string;
  taken: string;
}

const POSTGRES: Words = { store: "", left: "remaining", taken: "claims" };
const PEER: Words = { store: "peer ", left: "stock", taken: "holders" };

/** The run's coupons in one name: `a_measure`, or `a_measure_0..63` for many. */
function couponsName(run: Run): string {
  const [first] = run.coupons;
  return run.coupons.length === 1 ? `${first}` : `${first}..${run.coupons.length - 1}`;
}

/**
 * Checks one run's coupons and prints one line: each coupon's amount = left + taken; taken on all of
 * them = seeded + wrk's 201s, plus up to `unanswered` claims committed while in flight at wrk's stop
 * (they have a row but no counted 201).
 */
function judgeRun(run: Run, books: Books[], words: Words): string[] {
  const name = `${words.store}${couponsName(run)}`;
  const broken = books.filter((book) => book.left + book.taken !== book.amount);
  const taken = books.reduce((sum, book) => sum + book.taken, 0);
  const created = run.result.statuses["201"] ?? 0;
  const { unanswered } = run.result;
  const extra = taken - run.seeded - created;
  const countOk = extra >= 0 && extra <= unanswered;
  const [only] = books;
  const each =
    books.length === 1 && only
      ? `amount ${only.amount} = ${words.left} ${only.left} + ${words.taken} ${only.taken}`
      : `amount = ${words.left} + ${words.taken} on each of ${books.length} coupons, ${spread(books)} ${words.taken} each`;
  console.log(
    `  ${broken.length === 0 && countOk ? "PASS" : "FAIL"} ${name}: ${each} (${broken.length === 0 ? "ok" : "VIOLATED"});` +
      ` ${words.taken} ${taken} = seed ${run.seeded} + 201s ${created}` +
      (extra === 0 ? " exactly" : ` + ${extra} committed while in flight at wrk's stop (unanswered: ${unanswered})`),
  );
  const problems = broken.map(
    (book) =>
      `${words.store}${book.name}: ${words.left} ${book.left} + ${words.taken} ${book.taken} != amount ${book.amount}`,
  );
  if (!countOk)
    problems.push(
      `${name}: ${taken} ${words.taken} for ${run.seeded} seeded + ${created} 201s (${unanswered} unanswered)`,
    );
  return problems;
}

/** The fewest and most taken on one coupon, e.g. "2,101–2,230". */
function spread(books: Books[]): string {
  const taken = books.map((book) => book.taken);
  const figure = (value: number) => value.toLocaleString("en-US");
  return `${figure(Math.min(...taken))}–${figure(Math.max(...taken))}`;
}

/** Stock ledger per coupon (remaining + claims = amount) and wrk's 201s against each run's claim rows. */
export async function checkLedger(databaseUrl: string, runs: Run[]): Promise<string[]> {
  const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  try {
    const rows = await sql<Books[]>`
      select c.name, c.amount, c.remaining_amount as "left", count(cl.id)::int as taken
      from coupons c left join claims cl on cl.coupon_name = c.name
      group by c.name order by c.name`;
    const byName = new Map(rows.map((row) => [row.name, row]));
    const problems: string[] = [];
    console.log("\nCorrectness (per run): amount = remaining + claim rows per coupon; claim rows = seed + wrk 201s");
    const serviceRuns = runs.filter((run) => !run.scenario.peer && run.coupons.length > 0);
    for (const run of serviceRuns) {
      const missing = run.coupons.filter((name) => !byName.has(name));
      problems.push(...missing.map((name) => `${name}: coupon missing`));
      if (missing.length === 0)
        problems.push(
          ...judgeRun(
            run,
            run.coupons.map((name) => byName.get(name) as Books),
            POSTGRES,
          ),
        );
    }
    const claimed = new Set(serviceRuns.flatMap((run) => run.coupons));
    for (const row of rows.filter((candidate) => !claimed.has(candidate.name))) {
      console.log(`  FAIL ${row.name}: a coupon no run created`);
      problems.push(`${row.name}: a coupon no run created, ${row.taken} claim rows`);
    }
    problems.push(...(await checkStoredKeys(sql, runs, byName)));
    return problems;
  } finally {
    await sql.end();
  }
}

/** Every claim made with a key stored its answer in the same transaction: one key row per claim row. */
async function checkStoredKeys(sql: postgres.Sql, runs: Run[], byName: Map<string, Books>): Promise<string[]> {
  const problems: string[] = [];
  for (const run of runs.filter((candidate) => candidate.scenario.keys && !candidate.scenario.peer)) {
    for (const coupon of run.coupons) {
      const [keys] = await sql<{ count: number }[]>`
        select count(*)::int as count from idempotency_keys where key like ${`${coupon}-t%`} and outcome = 'created'`;
      const claims = byName.get(coupon)?.taken ?? -1;
      const ok = keys?.count === claims;
      console.log(`  ${ok ? "PASS" : "FAIL"} ${coupon}: stored keys ${keys?.count} = claim rows ${claims}`);
      if (!ok) problems.push(`${coupon}: ${keys?.count} stored keys for ${claims} claim rows`);
    }
  }
  return problems;
}

/** The peer's ledger in Redis, per coupon: stock + holders = amount; per run, holders = seed + wrk's 201s. */
export async function checkPeerLedger(redisUrl: string, prefix: string, runs: Run[]): Promise<string[]> {
  const client = new RedisClient(redisUrl);
  const problems: string[] = [];
  try {
    for (const run of runs.filter((candidate) => candidate.scenario.peer && candidate.coupons.length > 0)) {
      const amount = run.scenario.kind === "hot" ? HOT_STOCK : 1;
      const books: Books[] = [];
      for (const name of run.coupons) {
        const left = Number(await client.send("GET", [`${prefix}:{${name}}:stock`]));
        const taken = Number(await client.send("SCARD", [`${prefix}:{${name}}:holders`]));
        books.push({ name, amount, left, taken });
      }
      problems.push(...judgeRun(run, books, PEER));
    }
  } finally {
    client.close();
  }
  return problems;
}
