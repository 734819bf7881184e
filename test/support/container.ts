// PostgreSQL in a container through testcontainers, for machines with a Docker or Podman engine.
import { existsSync } from "node:fs";
import { homedir, userInfo } from "node:os";
import { join } from "node:path";

export interface TestServer {
  /** A superuser URL of the server. */
  url: string;
  /** What the suite runs against, for the one line the preload prints. */
  description: string;
  stop(): Promise<void>;
}

const IMAGE = "postgres:17-alpine";

// The places testcontainers' runtime strategies look for an engine (container-runtime/strategies).
function engineConfigured(): boolean {
  if (process.env.DOCKER_HOST) return true;
  const candidates = [join(homedir(), ".testcontainers.properties")];
  if (process.platform === "win32") candidates.push("//./pipe/docker_engine");
  else {
    candidates.push("/var/run/docker.sock", join(homedir(), ".docker", "run", "docker.sock"));
    candidates.push(join(homedir(), ".docker", "desktop", "docker.sock"), `/run/user/${userInfo().uid}/docker.sock`);
    if (process.env.XDG_RUNTIME_DIR) candidates.push(join(process.env.XDG_RUNTIME_DIR, "docker.sock"));
  }
  return candidates.some((path) => existsSync(path));
}

/** Whether a container engine answers: nothing configured costs no import, a silent one 5 s at most. */
export async function containerEngineReachable(): Promise<boolean> {
  if (!engineConfigured()) return false;
  const { getContainerRuntimeClient } = await import("testcontainers");
  let timer: ReturnType<typeof setTimeout> | undefined;
  const silent = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), 5000);
  });
  const answered = getContainerRuntimeClient().then(
    () => true,
    () => false,
  );
  const reachable = await Promise.race([answered, silent]);
  clearTimeout(timer);
  return reachable;
}

/** Starts one `postgres:17-alpine` container for the whole run. */
export async function startContainer(): Promise<TestServer> {
  // Ryuk (the reaper container) does not work under Bun; the container is stopped by stop() instead.
  process.env.TESTCONTAINERS_RYUK_DISABLED = "true";
  const { PostgreSqlContainer } = await import("@testcontainers/postgresql");
  const { Wait } = await import("testcontainers");
  const container = await new PostgreSqlContainer(IMAGE)
    // PostgreSQL logs this once for the init run and once for the real server.
    .withWaitStrategy(Wait.forLogMessage("database system is ready to accept connections", 2))
    .start();
  return {
    url: container.getConnectionUri(),
    description: `a ${IMAGE} container (testcontainers)`,
    async stop() {
      await container.stop();
    },
  };
}
