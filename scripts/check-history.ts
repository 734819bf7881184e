// `bun scripts/check-history.ts <history.json> [--all] [--coupon <name>]`: checks a history a failing
// linearizability test wrote (test/support/linearizability) and prints why it is not linearizable: the
// shortest failing stretch of the first failing coupon, or with --all of each (--coupon: only that one).
// Exits 1 when it is not linearizable.
import { checkHistory, shortestFailingPrefix } from "../test/support/linearizability/checker";
import { readHistory } from "../test/support/linearizability/history";
import { explain, judge } from "../test/support/linearizability/report";

const args = process.argv.slice(2);
const file = args.find((arg, i) => !arg.startsWith("--") && args[i - 1] !== "--coupon");
if (!file) {
  console.error("usage: bun scripts/check-history.ts <history.json> [--all] [--coupon <name>]");
  process.exit(2);
}
const history = readHistory(file);
const only = args.includes("--coupon") ? args[args.indexOf("--coupon") + 1] : undefined;
if (only !== undefined) history.operations = history.operations.filter((op) => op.coupon === only);
const base = Math.min(...history.operations.map((op) => op.invokedAt));
const started = performance.now();

if (args.includes("--all") || only !== undefined) {
  const verdicts = checkHistory(history);
  for (const verdict of verdicts) {
    const shown =
      verdict.linearizable || verdict.undecided ? verdict : shortestFailingPrefix(verdict, history.toleranceMs);
    console.log(explain(shown, history.toleranceMs, base).join("\n"));
  }
  console.log(`checked in ${Math.round(performance.now() - started)} ms`);
  process.exit(verdicts.every((v) => v.linearizable) ? 0 : 1);
}
const verdict = judge(history);
console.log(verdict.report);
console.log(`checked in ${Math.round(performance.now() - started)} ms`);
process.exit(verdict.linearizable ? 0 : 1);
