// A TCP proxy of the test's own between the service and PostgreSQL, to cut, stall and restore the
// database connection mid-load without touching the shared database server.
import net from "node:net";

interface Link {
  sockets: [net.Socket, net.Socket];
  held: [net.Socket, Buffer][];
}

export interface FaultProxy {
  /** A copy of `databaseUrl` pointing at the proxy. */
  url: string;
  /** Drops every connection and refuses new ones (database down or restarting). */
  cut(): void;
  /** Keeps connections open but forwards nothing, either way (a hung network or database). */
  stall(): void;
  /** Back to forwarding normally. */
  restore(): void;
  close(): Promise<void>;
}

/** Starts a proxy on 127.0.0.1 in front of the PostgreSQL that `databaseUrl` names. */
export async function startFaultProxy(databaseUrl: string): Promise<FaultProxy> {
  const target = new URL(databaseUrl);
  const links = new Set<Link>();
  let mode: "open" | "cut" | "stall" = "open";

  const server = net.createServer((client) => {
    if (mode === "cut") {
      client.destroy();
      return;
    }
    const upstream = net.connect(Number(target.port || 5432), target.hostname);
    const link: Link = { sockets: [client, upstream], held: [] };
    links.add(link);
    // Forwarded by hand (not pipe(), which resumes paused sockets): while stalled, chunks are held.
    const forward = (to: net.Socket) => (chunk: Buffer) => {
      if (mode === "stall") link.held.push([to, chunk]);
      else to.write(chunk);
    };
    client.on("data", forward(upstream));
    upstream.on("data", forward(client));
    const drop = () => {
      links.delete(link);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = new URL(databaseUrl);
  url.hostname = "127.0.0.1";
  url.port = String((server.address() as net.AddressInfo).port);

  const destroyAll = () => {
    for (const link of links) for (const socket of link.sockets) socket.destroy();
    links.clear();
  };
  return {
    url: url.href,
    cut() {
      mode = "cut";
      destroyAll();
    },
    stall() {
      mode = "stall";
    },
    restore() {
      mode = "open";
      for (const link of links) {
        for (const [to, chunk] of link.held) to.write(chunk);
        link.held = [];
      }
    },
    close() {
      mode = "cut";
      destroyAll();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
