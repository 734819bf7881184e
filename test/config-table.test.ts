import { describe, expect, it } from "bun:test";
import { join } from "node:path";
import { Type } from "@sinclair/typebox";
import { ConfigSchema } from "../src/config";
import { configTable, TABLE_END, TABLE_START, withConfigTable } from "../src/config-table";

const PAGE = join(import.meta.dir, "..", "docs", "configuration.md");
const STALE =
  "docs/configuration.md's settings table differs from ConfigSchema: run `bun scripts/config-table.ts --write`";

describe("configTable", () => {
  const table = configTable(ConfigSchema);
  const rows = table.split("\n").slice(2);

  it("describes every setting of ConfigSchema, one row each, in the schema's order", () => {
    const names = Object.keys(ConfigSchema.properties);
    expect(rows.map((row) => row.split("|")[1]?.trim())).toEqual(names.map((name) => `\`${name}\``));
    for (const [name, property] of Object.entries(ConfigSchema.properties)) {
      const { description } = property as { description?: string };
      expect(description?.trim() ?? "", `${name} has no description in ConfigSchema`).not.toBe("");
    }
  });

  it("shows a default in backticks, unset where there is none, and a meaning markdown cannot misread", () => {
    const schema = Type.Object({
      SIZE: Type.Integer({ default: 3, description: "a | b, or Bearer <token>" }),
      TOKEN: Type.Optional(Type.String({ description: "secret" })),
    });
    // Columns padded to their widest cell, as the formatter (bun run lint) leaves a markdown table.
    expect(configTable(schema).split("\n")).toEqual([
      "| variable | default | meaning                     |",
      "| -------- | ------- | --------------------------- |",
      "| `SIZE`   | `3`     | a \\| b, or Bearer \\<token\\> |",
      "| `TOKEN`  | unset   | secret                      |",
    ]);
  });

  it("is the table in docs/configuration.md, between its markers", async () => {
    const page = await Bun.file(PAGE).text();
    expect(page).toContain(TABLE_START);
    expect(page).toContain(TABLE_END);
    expect(page, STALE).toBe(withConfigTable(page, table));
  });

  it("refuses to write into a page without both markers", () => {
    expect(() => withConfigTable(`# Configuration\n${TABLE_START}\n`, table)).toThrow(TABLE_END);
  });
});
