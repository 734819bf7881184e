// The batcher alone, with a decide of the test's own: arrival order per key, even past a deadline.
import { describe, expect, it } from "bun:test";
import { createGroupCommit, type Refusal } from "../../src/engine/group-commit";

interface Item {
  id: string;
  deadline: number;
}

/** A batcher whose first batch stays in flight until `settleFirst` is called; `sent` lists every batch sent. */
function stalledFirst() {
  const sent: string[][] = [];
  let settleFirst = () => {};
  const firstSettled = new Promise<void>((resolve) => {
    settleFirst = resolve;
  });
  const batcher = createGroupCommit<Item, string>({
    batchMax: 10,
    queueMax: 100,
    pendingMax: 100,
    async decide(_key, items) {
      sent.push(items.map((item) => item.id));
      if (sent.length === 1) await firstSettled;
      return items.map((item) => `decided ${item.id}`);
    },
    onTrouble() {},
  });
  return { batcher, sent, settleFirst };
}

const item = (id: string, ms: number): Item => ({ id, deadline: performance.now() + ms });

describe("createGroupCommit", () => {
  it("sends a key's next batch only once the batch given up on at its deadline has its fate known", async () => {
    const { batcher, sent, settleFirst } = stalledFirst();
    expect(await batcher.submit("coupon", item("a", 50))).toBe("unconfirmed");
    const next = batcher.submit("coupon", item("b", 5000));
    await Bun.sleep(100);
    expect(sent).toEqual([["a"]]); // "a" may still reach the database: "b" must not overtake it
    settleFirst();
    expect(await next).toBe("decided b");
    expect(sent).toEqual([["a"], ["b"]]);
  });

  it("answers what waits behind a batch in flight 'expired' at its own deadline, never sent", async () => {
    const { batcher, sent, settleFirst } = stalledFirst();
    const first = batcher.submit("coupon", item("a", 50));
    const waiting: Promise<string | Refusal>[] = [batcher.submit("coupon", item("b", 100))];
    expect(await first).toBe("unconfirmed");
    expect(await waiting[0]).toBe("expired");
    settleFirst();
    expect(await batcher.submit("coupon", item("c", 5000))).toBe("decided c");
    expect(sent).toEqual([["a"], ["c"]]);
  });

  it("keeps other keys going while one key's batch is in flight", async () => {
    const { batcher, settleFirst } = stalledFirst();
    expect(await batcher.submit("stalled", item("a", 50))).toBe("unconfirmed");
    expect(await batcher.submit("other", item("x", 5000))).toBe("decided x");
    settleFirst();
  });

  it("with gatherTurn, decides the items submitted in one turn of the event loop in one batch, in arrival order", async () => {
    const sent: string[][] = [];
    const batcher = (gatherTurn: boolean) =>
      createGroupCommit<Item, string>({
        batchMax: 10,
        queueMax: 100,
        pendingMax: 100,
        gatherTurn,
        // Decided at once, as a database in this thread decides: nothing arrives while a batch is in flight.
        decide: async (_key, items) => {
          sent.push(items.map((item) => item.id));
          return items.map((item) => `decided ${item.id}`);
        },
        onTrouble() {},
      });
    const submitFour = (b: ReturnType<typeof batcher>) =>
      Promise.all(["a", "b", "c", "d"].map((id) => b.submit("coupon", item(id, 5000))));
    expect(await submitFour(batcher(true))).toEqual(["decided a", "decided b", "decided c", "decided d"]);
    expect(sent).toEqual([["a", "b", "c", "d"]]);
    sent.length = 0;
    await submitFour(batcher(false));
    expect(sent[0]).toEqual(["a"]); // without it the first item goes alone
  });
});
