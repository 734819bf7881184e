// A TCP proxy of the test's own between a client and a server (the service and PostgreSQL, or an HTTP
// client and the service), to cut, stall and restore a connection mid-load without touching either.

import { afterAll, beforeAll } from "bun:test";
import net from "node:net";
import { createTestDatabase, type TestDatabase } from "./database";

/** Which way a stall holds bytes: both ways, only the server's answers, or only the client's requests. */
export type StallDirection = "both" | "to-client" | "to-server";

interface Link {
  sockets: [client: net.Socket, upstream: net.Socket];
  held: [net.Socket, Buffer][];
}

export interface FaultProxy {
  /** A copy of `targetUrl` pointing at the proxy. */
  url: string;
  /** Drops every connection and refuses new ones (database down or restarting). */
  cut(): void;
  /**
   * Keeps connections open but forwards nothing (a hung network or database), either way by default;
   * "to-client" holds only what the server sends (a request delivered, its answer lost in transit).
   */
  stall(direction?: StallDirection): void;
  /** Back to forwarding normally, held bytes first. */
  restore(): void;
  /** The bytes held so far on their way to the proxy's clients (dropped with their connection). */
  heldForClients(): Buffer;
  /** Connections clients opened so far, refused ones included (a client's connection attempts). */
  connections(): number;
  close(): Promise<void>;
}

/** Starts a proxy on 127.0.0.1 in front of the server (PostgreSQL, or any TCP server) that `targetUrl` names. */
export async function startFaultProxy(targetUrl: string): Promise<FaultProxy> {
  const target = new URL(targetUrl);
  const links = new Set<Link>();
  let refusing = false;
  let opened = 0;
  const stalled = { toClient: false, toServer: false };

  const server = net.createServer((client) => {
    opened++;
    if (refusing) {
      client.destroy();
      return;
    }
    const upstream = net.connect(Number(target.port || 5432), target.hostname);
    const link: Link = { sockets: [client, upstream], held: [] };
    links.add(link);
    // Forwarded by hand (not pipe(), which resumes paused sockets): while stalled, chunks are held.
    const forward = (to: net.Socket, way: keyof typeof stalled) => (chunk: Buffer) => {
      if (stalled[way]) link.held.push([to, chunk]);
      else to.write(chunk);
    };
    client.on("data", forward(upstream, "toServer"));
    upstream.on("data", forward(client, "toClient"));
    const drop = () => {
      links.delete(link);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = new URL(targetUrl);
  url.hostname = "127.0.0.1";
  url.port = String((server.address() as net.AddressInfo).port);

  const destroyAll = () => {
    for (const link of links) for (const socket of link.sockets) socket.destroy();
    links.clear();
  };
  return {
    url: url.href,
    cut() {
      refusing = true;
      destroyAll();
    },
    stall(direction = "both") {
      refusing = false;
      stalled.toClient = direction !== "to-server";
      stalled.toServer = direction !== "to-client";
    },
    restore() {
      refusing = false;
      stalled.toClient = false;
      stalled.toServer = false;
      for (const link of links) {
        for (const [to, chunk] of link.held) to.write(chunk);
        link.held = [];
      }
    },
    heldForClients() {
      const chunks = [...links].flatMap((link) =>
        link.held.filter(([to]) => to === link.sockets[0]).map(([, chunk]) => chunk),
      );
      return Buffer.concat(chunks);
    },
    connections: () => opened,
    close() {
      refusing = true;
      destroyAll();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** A database of the enclosing describe block's (or file's) own behind a fault proxy, ready inside its tests. */
export function proxiedDatabaseForSuite(): { readonly database: TestDatabase; readonly proxy: FaultProxy } {
  const suite = {} as { database: TestDatabase; proxy: FaultProxy };
  beforeAll(async () => {
    suite.database = await createTestDatabase();
    suite.proxy = await startFaultProxy(suite.database.url);
  });
  afterAll(async () => {
    await suite.proxy.close();
    await suite.database.drop();
  });
  return suite;
}

/**
 * A plain TCP proxy on 127.0.0.1 in front of `targetUrl` that shows each chunk a client sends, before
 * forwarding it, to that connection's inspector (`inspector()` makes one per connection); an inspector
 * answering false cuts its connection instead.
 */
export async function startInspectingProxy(targetUrl: string, inspector: () => (chunk: Buffer) => boolean) {
  const target = new URL(targetUrl);
  const server = net.createServer((client) => {
    const inspect = inspector();
    const upstream = net.connect(Number(target.port || 5432), target.hostname);
    client.on("data", (chunk: Buffer) => {
      if (inspect(chunk)) upstream.write(chunk);
      else {
        client.destroy();
        upstream.destroy();
      }
    });
    upstream.on("data", (chunk) => client.write(chunk));
    for (const [one, other] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      one.on("close", () => other.destroy());
      one.on("error", () => other.destroy());
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = new URL(targetUrl);
  url.hostname = "127.0.0.1";
  url.port = String((server.address() as net.AddressInfo).port);
  return { url: url.href, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}
