// Preloaded once by bun test (bunfig.toml). Uses TEST_DATABASE_URL when set; otherwise starts one
// PostgreSQL container for the whole run. Each test file then creates its own database inside it.
import { afterAll } from "bun:test";

if (!process.env.TEST_DATABASE_URL) {
  // Ryuk (the reaper container) does not work under Bun; the container is stopped in afterAll instead.
  process.env.TESTCONTAINERS_RYUK_DISABLED = "true";
  const { PostgreSqlContainer } = await import("@testcontainers/postgresql");
  const { Wait } = await import("testcontainers");
  const container = await new PostgreSqlContainer("postgres:17-alpine")
    // PostgreSQL logs this once for the init run and once for the real server.
    .withWaitStrategy(Wait.forLogMessage("database system is ready to accept connections", 2))
    .start();
  process.env.TEST_DATABASE_URL = container.getConnectionUri();
  afterAll(async () => {
    await container.stop();
  });
}
