// The real entry point (src/main.ts) as a child process, for tests that need a process of its own
// (signals, crashes, load), and a raw TCP client that sends bytes no HTTP client library would (no Host,
// broken framing, invalid UTF-8).
import { connect } from "node:net";
import { join } from "node:path";
import { type Client, client } from "./http";

const MAIN = join(import.meta.dir, "../../src/main.ts");

export interface Service {
  child: Bun.Subprocess<"ignore", "pipe", "inherit">;
  port: number;
  api: Client;
  /** Every stdout line so far, parsed (the service logs JSON lines). */
  logs(): Record<string, any>[];
  /** Every stdout line once the process has exited. */
  finalLogs(): Promise<Record<string, any>[]>;
}

/**
 * Starts the service on a free port with `env` on top of the test's; resolves once it listens.
 * `command` runs something else than src/main.ts under Bun (a compiled binary).
 */
export async function startService(env: Record<string, string>, command = ["bun", MAIN]): Promise<Service> {
  const child = Bun.spawn(command, {
    env: { ...process.env, PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "info", ...env },
    stdout: "pipe",
    stderr: "inherit",
  });
  const lines: string[] = [];
  const reader = (async () => {
    const decoder = new TextDecoder();
    let buffer = "";
    for await (const chunk of child.stdout) {
      buffer += decoder.decode(chunk, { stream: true });
      const parts = buffer.split("\n");
      buffer = parts.pop() ?? "";
      lines.push(...parts);
    }
  })();
  const logs = () => lines.map((line) => JSON.parse(line));
  const deadline = Date.now() + 15_000;
  let port: number | undefined;
  while (!port && Date.now() < deadline && child.exitCode === null) {
    port = logs().find((l) => l.msg === "listening")?.port;
    if (!port) await Bun.sleep(20);
  }
  if (!port) throw new Error(`service did not start:\n${lines.join("\n")}`);
  return { child, port, api: client(`http://127.0.0.1:${port}`), logs, finalLogs: () => reader.then(logs) };
}

export interface Finished {
  code: number;
  /** Every stdout line, parsed when it is JSON (the log), else as { text }. */
  logs: Record<string, any>[];
  stdout: string;
  stderr: string;
}

/** Runs src/main.ts with `args` and `env` on top of the test's, in `cwd`, until it exits (start-up failures, CLI). */
export async function runToExit(args: string[], env: Record<string, string>, cwd?: string): Promise<Finished> {
  const child = Bun.spawn(["bun", MAIN, ...args], {
    env: { ...process.env, PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "info", ...env },
    cwd,
    stdout: "pipe",
    stderr: "pipe",
  });
  const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
  const [stdout, stderr, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  clearTimeout(timer);
  const parse = (line: string) => {
    try {
      return JSON.parse(line);
    } catch {
      return { text: line };
    }
  };
  return { code, stdout, stderr, logs: stdout.split("\n").filter(Boolean).map(parse) };
}

export interface RawAnswer {
  /** Everything the server wrote, as latin1 (bytes preserved). */
  text: string;
  /** The status code of the first answer, or undefined if the server wrote nothing. */
  status?: number;
  /** Whether the server closed the connection (rather than the client giving up after `waitMs`). */
  closedByServer: boolean;
}

/** Writes `bytes` on a fresh connection and collects the answer until the server closes or `waitMs` passes. */
export function sendRaw(port: number, bytes: string | Uint8Array, waitMs = 2000): Promise<RawAnswer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let done = false;
    const socket = connect(port, "127.0.0.1", () => {
      socket.write(typeof bytes === "string" ? Buffer.from(bytes, "latin1") : bytes);
    });
    const finish = (closedByServer: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      const text = Buffer.concat(chunks).toString("latin1");
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1];
      resolve({ text, status: status ? Number(status) : undefined, closedByServer });
    };
    const timer = setTimeout(() => finish(false), waitMs);
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("close", () => finish(true));
    socket.on("error", () => finish(true));
  });
}
