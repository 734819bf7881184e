// `bun scripts/config-table.ts` prints the settings table generated from ConfigSchema;
// `--write` puts it into docs/configuration.md between its markers (test/config-table.test.ts checks it).
import { join } from "node:path";
import { ConfigSchema } from "../src/config";
import { configTable, withConfigTable } from "../src/config-table";

const table = configTable(ConfigSchema);
if (process.argv.includes("--write")) {
  const page = join(import.meta.dir, "..", "docs", "configuration.md");
  await Bun.write(page, withConfigTable(await Bun.file(page).text(), table));
  console.log(`wrote the settings table into ${page}`);
} else {
  console.log(table);
}
