# syntax=docker/dockerfile:1
# Two stages: Bun compiles the service into one self-contained executable (migrations, PGlite's
# WebAssembly, the embedded database's prepared data folder and the docs UI embedded), and the runtime
# image holds only that file on distroless.
# See docs/adr/0002-single-binary-distroless.md.

# ---- build ---------------------------------------------------------------------------------------
# The plain version tag is Bun's Debian (bookworm, glibc) image. Not alpine: an executable compiled
# there links musl and would not start on the glibc distroless base below (also bookworm).
FROM oven/bun:1.4.5 AS build
WORKDIR /src
ENV BUN_INSTALL_CACHE_DIR=/var/cache/bun

# The whole context (filtered by .dockerignore) rather than package.json + bun.lock first: bun install
# also needs patches/ whenever package.json declares patchedDependencies, and COPY cannot copy a folder
# that may not exist without flattening it. The cache mount keeps a re-install cheap when only
# sources changed.
COPY . .
RUN --mount=type=cache,target=/var/cache/bun bun install --frozen-lockfile
RUN bun run build

# The embedded-mode data folder (DATA_DIR), created here because distroless has no mkdir; owned by
# distroless's nonroot user (65532) so the service can write its PGlite files when DATABASE_URL is unset.
RUN mkdir -p /out/data && chown 65532:65532 /out/data

# ---- runtime -------------------------------------------------------------------------------------
# base (glibc, CA certificates, tzdata), not static: the Bun executable links glibc dynamically.
FROM gcr.io/distroless/base-debian12:nonroot
WORKDIR /app
# Owned by root and not writable by the service user: the process cannot replace its own binary.
COPY --from=build /src/dist/coupon-service /app/coupon-service
COPY --from=build --chown=65532:65532 /out/data /app/data

ENV HOST=0.0.0.0 \
    PORT=3000 \
    DATA_DIR=/app/data

# nonroot, by number: Kubernetes' runAsNonRoot can only verify a numeric user.
USER 65532:65532
EXPOSE 3000

# On SIGTERM the service fails readiness for SHUTDOWN_DELAY_MS (default 0), then drains in-flight
# requests for up to SHUTDOWN_GRACE_MS (default 10 s). Give the container longer than their sum before
# SIGKILL (docker stop -t, compose stop_grace_period, k8s terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM

# No shell or curl in distroless: the binary probes its own GET /health/ready (exit 0 on 200, else 1).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/app/coupon-service", "healthcheck"]

ENTRYPOINT ["/app/coupon-service"]
