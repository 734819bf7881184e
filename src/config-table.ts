// The settings table of docs/configuration.md, generated from the config schema like `--help`, so the
// page and the schema cannot drift; scripts/config-table.ts writes it, test/config-table.test.ts checks it.
import type { TObject } from "@sinclair/typebox";

/** The markers around the generated table in docs/configuration.md. */
export const TABLE_START = "<!-- config-table:start -->";
export const TABLE_END = "<!-- config-table:end -->";

// Descriptions are plain text (they are also --help): escape what markdown would read as syntax,
// `|` above all (a cell break) and `<` (`<token>` would vanish as an HTML tag).
const cell = (text: string) => text.replace(/[\\|<>*`[\]]/g, "\\$&");

/** The markdown table of every setting in `schema`: variable, default (or unset), meaning; columns aligned as the formatter aligns them. */
export function configTable(schema: TObject): string {
  const rows = Object.entries(schema.properties).map(([name, property]) => {
    const { default: value, description } = property as { default?: unknown; description?: string };
    const shown = value === undefined ? "unset" : `\`${String(value)}\``;
    return [`\`${name}\``, shown, cell(description ?? "")];
  });
  const header = ["variable", "default", "meaning"];
  const widths = header.map((title, i) => Math.max(title.length, ...rows.map((row) => (row[i] as string).length)));
  const line = (cells: string[]) => `| ${cells.map((text, i) => text.padEnd(widths[i] as number)).join(" | ")} |`;
  return [line(header), line(widths.map((width) => "-".repeat(width))), ...rows.map(line)].join("\n");
}

/** `page` with the text between the table markers replaced by `table`; throws if a marker is missing. */
export function withConfigTable(page: string, table: string): string {
  const start = page.indexOf(TABLE_START);
  const end = page.indexOf(TABLE_END, start);
  if (start === -1 || end === -1) throw new Error(`expected ${TABLE_START} … ${TABLE_END} in the page`);
  return `${page.slice(0, start + TABLE_START.length)}\n${table}\n${page.slice(end)}`;
}
