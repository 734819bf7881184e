// The drizzle-kit migrations, embedded at build time so the compiled binary needs no files beside it.
// Add a line here for each new file drizzle-kit generates; test/store/migrate.test.ts fails until you do.

import m0000 from "../../drizzle/0000_init.sql" with { type: "text" };
import m0001 from "../../drizzle/0001_claim_batch.sql" with { type: "text" };
import m0002 from "../../drizzle/0002_sale_schedule.sql" with { type: "text" };
import m0003 from "../../drizzle/0003_release.sql" with { type: "text" };
import m0004 from "../../drizzle/0004_idempotency.sql" with { type: "text" };
import m0005 from "../../drizzle/0005_fences.sql" with { type: "text" };
import m0006 from "../../drizzle/0006_seq.sql" with { type: "text" };
import journal from "../../drizzle/meta/_journal.json";

export const embeddedJournal = journal;

export const embeddedSql: Record<string, string> = {
  "0000_init": m0000,
  "0001_claim_batch": m0001,
  "0002_sale_schedule": m0002,
  "0003_release": m0003,
  "0004_idempotency": m0004,
  "0005_fences": m0005,
  "0006_seq": m0006,
};
