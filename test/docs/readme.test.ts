// The README and docs as a newcomer meets them: a front door short enough to read that points at every
// page, links and paths that still lead somewhere after a file moves (each stale mention listed at once,
// with the file and line that names it), and the README's curl commands answering, as written, what its
// route table promises.
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { basename, dirname, join, relative } from "node:path";
import ts from "typescript";
import { buildApp, listen } from "../support/app";
import { databaseForSuite } from "../support/database";

const ROOT = join(import.meta.dir, "../..");
const README = "README.md";
const WORDS_MAX = 1500;

/** A place in the repository that names a link target or a path. */
interface Mention {
  where: string;
  target: string;
}

/** The repository's files matching `pattern`, as paths from its root, sorted. */
function files(pattern: string): string[] {
  return [...new Bun.Glob(pattern).scanSync({ cwd: ROOT })].sort();
}

const read = (path: string) => readFileSync(join(ROOT, path), "utf8");
const lineAt = (text: string, index: number) => text.slice(0, index).split("\n").length;
// A folder counts only when it holds something: git keeps no empty folder, so a clone would not have it.
const exists = (path: string) =>
  !relative(ROOT, path).startsWith("..") &&
  existsSync(path) &&
  (!statSync(path).isDirectory() || readdirSync(path).length > 0);

/** `text` with what `pattern` matches blanked out, newlines kept, so offsets and line numbers still hold. */
const blank = (text: string, pattern: RegExp) => text.replace(pattern, (code) => code.replace(/[^\n]/g, " "));

const FENCE = /^[ \t]*(`{3,}|~{3,})[^\n]*\n[\s\S]*?^[ \t]*\1[ \t]*$/gm;
const CODE_SPAN = /`[^`\n]+`/g;
// An inline link or image `](target "title")`, or a reference definition `[name]: target`.
const LINK = /\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)|^ {0,3}\[[^\]\n]+\]:\s*<?([^\s>]+)>?/gm;
// A path from the repository's root: starts at a word boundary that is not inside another path or a URL.
const ROOT_PATH = /(?<![\w./@-])(?:\.\/)?(?:src|test|scripts|bench|deploy|drizzle|docs|patches|\.ci)\/[\w.@*<>{}/-]*/g;
// In src/ comments a module is often named from src/ (`store/fences.ts`).
const SRC_PATH = /(?<![\w./@-])(?:domain|store|engine|http|tracing|metrics)\/[a-z0-9-]+\.ts\b/g;
// A module by its bare name (`claims.ts`, `claims.test.ts`), as prose and comments often name one.
const MODULE = /(?<![\w./@-])[a-z0-9-]+(?:\.[a-z0-9-]+)*\.ts\b/g;

/** The markdown links of `page` (outside code), each with its line. */
function links(page: string): Mention[] {
  const text = blank(blank(read(page), FENCE), CODE_SPAN);
  return [...text.matchAll(LINK)].map((m) => ({
    where: `${page}:${lineAt(text, m.index)}`,
    target: m[1] ?? m[2] ?? "",
  }));
}

/** The link targets of `mentions` in `page` that lead to no file or folder of the repository. */
function brokenLinks(page: string, mentions: Mention[]): Mention[] {
  return mentions.filter(({ target }) => {
    if (/^(https?|mailto):/i.test(target)) return false;
    const path = decodeURI(target.replace(/#.*$/, ""));
    if (path === "") return false; // an anchor in the page itself
    return !exists(path.startsWith("/") ? join(ROOT, path) : join(ROOT, dirname(page), path));
  });
}

/** Every repository path `text` of `file` names, glob-like and extension-less ones left out. */
function paths(file: string, text: string): Mention[] {
  const named = [...text.matchAll(ROOT_PATH)].map((m) => ({ m, under: "" }));
  if (file.startsWith("src/")) named.push(...[...text.matchAll(SRC_PATH)].map((m) => ({ m, under: "src/" })));
  named.push(...[...text.matchAll(MODULE)].map((m) => ({ m, under: "" })));
  const found: Mention[] = [];
  for (const { m, under } of named) {
    const token = m[0].replace(/^\.\//, "").replace(/[.,:;]+$/, "");
    // `test/**/*.test.ts`, `docs/adr/<n>-<title>.md`: a pattern of names, not a path.
    if (/[*<>{}]/.test(token)) continue;
    // Only a file (an extension) or a folder (a slash): `docs/json` in prose is a route of the service.
    if (!/(\/|\.[A-Za-z0-9]+)$/.test(token)) continue;
    found.push({ where: `${file}:${lineAt(text, m.index)}`, target: `${under}${token}` });
  }
  return found;
}

/** A TypeScript file with everything but its comments blanked: the leading trivia of every token, once. */
function comments(file: string): string {
  const source = ts.createSourceFile(file, read(file), ts.ScriptTarget.Latest, true);
  const ranges = new Map<number, number>();
  const visit = (node: ts.Node) => {
    for (const range of ts.getLeadingCommentRanges(source.text, node.pos) ?? []) ranges.set(range.pos, range.end);
    for (const child of node.getChildren(source)) visit(child);
  };
  visit(source);
  let text = source.text.replace(/[^\n]/g, " ");
  for (const [pos, end] of ranges) text = text.slice(0, pos) + source.text.slice(pos, end) + text.slice(end);
  return text;
}

const pages = [README, ...files("docs/**/*.md"), ...files("deploy/**/README.md")];

describe("README.md", () => {
  const readme = read(README);

  it(`is at most ${WORDS_MAX} words`, () => {
    expect(readme.split(/\s+/).filter(Boolean).length).toBeLessThanOrEqual(WORDS_MAX);
  });

  it("links to every page in docs/ and to docs/adr/", () => {
    const targets = new Set(links(README).map(({ target }) => target.replace(/#.*$/, "").replace(/\/$/, "")));
    const wanted = [...files("docs/*.md"), "docs/adr"];
    expect(wanted.filter((page) => !targets.has(page))).toEqual([]);
  });
});

describe("the docs", () => {
  it("link only to files and folders that exist", () => {
    const broken = pages.flatMap((page) => brokenLinks(page, links(page)));
    expect(broken.map(({ where, target }) => `${where}: ${target}`)).toEqual([]);
  });

  it("name only repository paths that exist, in README.md, docs/ and the comments of src/", () => {
    const mentions = [
      ...[README, ...files("docs/**/*.md")].flatMap((page) => paths(page, read(page))),
      ...files("src/**/*.ts").flatMap((file) => paths(file, comments(file))),
    ];
    expect(mentions.length).toBeGreaterThan(0);
    // A bare module name (`fences.ts`) is kept while some module of the repository has that name.
    const modules = new Set(files("{src,test,scripts,bench}/**/*.ts").map((path) => basename(path)));
    const resolves = (target: string) => (target.includes("/") ? exists(join(ROOT, target)) : modules.has(target));
    const missing = mentions.filter(({ target }) => !resolves(target));
    expect(missing.map(({ where, target }) => `${where}: ${target}`)).toEqual([]);
  });
});

/** The curl commands of the README's "The API at a glance", backslash-continued lines joined as sh joins them. */
function apiCommands(section: string): string[] {
  const blocks = [...section.matchAll(/^```sh\n([\s\S]*?)^```/gm)].map((m) => m[1]);
  return blocks
    .join("\n")
    .replace(/\\\n/g, "")
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line.startsWith("curl"));
}

/** The 2xx status the section's route table promises for `command` (its method and path); throws when none does. */
function promised(section: string, command: string): number {
  const method = command.match(/\s-X\s+(\w+)/)?.[1] ?? (/\s-d\s/.test(command) ? "POST" : "GET");
  const path = command.match(/localhost:3000(\/[^\s'"?]*)/)?.[1];
  const rows = section
    .split("\n")
    .filter((line) => line.startsWith("|"))
    .map((line) => line.split("|").map((cell) => cell.trim()))
    .filter(([, route = ""]) => {
      const [verb, pattern] = route.match(/^`(\w+) (\/[^`?\s]*)/)?.slice(1) ?? [];
      if (verb !== method || !pattern) return false;
      return new RegExp(`^${pattern.replace(/\{\w+\}/g, "[^/]+")}$`).test(path ?? "");
    });
  const [row] = rows;
  if (!row || rows.length > 1) throw new Error(`${rows.length} rows of the route table match ${method} ${path}`);
  const status = row[3]?.match(/`(2\d\d)\b/)?.[1];
  if (!status) throw new Error(`the route table promises no 2xx for ${method} ${path}`);
  return Number(status);
}

describe("the README's API at a glance, run as written", () => {
  const section =
    read(README)
      .split(/^## /m)
      .find((part) => part.startsWith("The API at a glance")) ?? "";
  const commands = apiCommands(section);
  const database = databaseForSuite();
  let server: ReturnType<typeof listen>;
  beforeAll(() => {
    server = listen(buildApp(database.handle.db).app);
  });
  afterAll(() => server.stop());

  it("has curl commands against localhost:3000, and curl is installed to run them", () => {
    expect(commands.length).toBeGreaterThan(0);
    expect(commands.filter((command) => !command.includes("localhost:3000"))).toEqual([]);
    const curl = Bun.which("curl");
    expect(curl, "curl is not installed: the README's commands need it (apt-get install curl)").not.toBeNull();
  });

  for (const command of commands) {
    it(`answers what the route table promises: ${command}`, async () => {
      const expected = promised(section, command);
      // The command unchanged but for the address and a last line carrying the status.
      const run = command
        .replaceAll("localhost:3000", new URL(server.baseUrl).host)
        .replace(/^curl /, "curl -w '\\n%{http_code}' ");
      const child = Bun.spawn(["sh", "-c", run], {
        cwd: ROOT,
        env: { ...process.env, NO_PROXY: "*", no_proxy: "*" }, // a proxy of the machine's must not carry them
        stdout: "pipe",
        stderr: "pipe",
        timeout: 10_000,
      });
      const [output, errors] = await Promise.all([
        new Response(child.stdout).text(),
        new Response(child.stderr).text(),
      ]);
      await child.exited;
      const status = Number(output.trim().split("\n").at(-1));
      expect(status, `${run}\nanswered:\n${output}\n${errors}`).toBe(expected);
    });
  }
});
