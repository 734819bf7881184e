// The Kubernetes manifests (deploy/kubernetes): each overlay renders with `kubectl kustomize`, every object
// is valid with unknown fields rejected (scripts/validate-kubernetes.ts), and what they say agrees with
// the service itself: the settings pass its own loadConfig, the probes hit its health routes, the shutdown
// fits the grace period, and the production URLs reach the Pooler and the primary as README asks.
// Offline: no cluster. KUBECTL names a kubectl off PATH; the file skips only off CI on a machine without
// one (.ci/run installs it).
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { type KubeObject, OVERLAYS, render, validateObjects } from "../../scripts/validate-kubernetes";
import { ConfigSchema, loadConfig } from "../../src/config";
import { postgresOptions } from "../../src/store/connect";

const KUBECTL = process.env.KUBECTL ?? Bun.which("kubectl") ?? undefined;
const withKubectl = KUBECTL || process.env.CI === "true" ? describe : describe.skip;
if (!KUBECTL && process.env.CI !== "true") {
  console.warn("test/deploy/kubernetes.test.ts skipped: no kubectl on PATH (see .ci/run for how CI installs it)");
}
const BASE = join(OVERLAYS, "../base");
const OVERLAY_NAMES = ["dev", "production"] as const;
type Overlay = (typeof OVERLAY_NAMES)[number];

const SETTINGS = new Set(Object.keys(ConfigSchema.properties));

/** The owner CloudNativePG creates for bootstrap.initdb, as its `<cluster>-app` Secret names it. */
const APP_USER = "coupons";
/** Secrets the overlays reference but do not create, with stand-in values: who creates each is documented. */
const EXTERNAL_SECRETS: Record<string, Record<string, string>> = {
  // CloudNativePG, for the owner of bootstrap.initdb (cluster.yaml).
  "coupons-db-app": { username: APP_USER, password: "generated64letters" },
  // Operators, before applying production (deploy/kubernetes/README.md).
  "coupon-service-secrets": { ADMIN_TOKEN: "operator-chosen-admin-token" },
};

type Any = any;
const find = (objects: KubeObject[], kind: string, name?: string): Any => {
  const found = objects.find((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
  if (!found) throw new Error(`no ${kind}${name ? `/${name}` : ""} rendered`);
  return found;
};
const podSpec = (objects: KubeObject[]): Any => find(objects, "Deployment", "coupon-service").spec.template.spec;
const serviceContainer = (objects: KubeObject[]): Any => podSpec(objects).containers[0];

/** A Secret's or ConfigMap's data, rendered (generators: base64) or external, by name. */
function dataOf(objects: KubeObject[], kind: "Secret" | "ConfigMap", name: string): Record<string, string> {
  const found: Any = objects.find((o) => o.kind === kind && o.metadata.name === name);
  if (kind === "ConfigMap") {
    if (!found) throw new Error(`ConfigMap ${name} is not rendered`);
    return found.data ?? {};
  }
  if (found) return Object.fromEntries(Object.entries(found.data ?? {}).map(([k, v]) => [k, atob(v as string)]));
  const external = EXTERNAL_SECRETS[name];
  if (!external) throw new Error(`Secret ${name} is neither rendered nor created outside (EXTERNAL_SECRETS)`);
  return external;
}

/** The container's environment as the kubelet builds it: envFrom, then env in order with $(VAR) expanded. */
function environment(objects: KubeObject[], container: Any): Record<string, string> {
  const env: Record<string, string> = {};
  for (const source of container.envFrom ?? []) {
    if (source.configMapRef) Object.assign(env, dataOf(objects, "ConfigMap", source.configMapRef.name));
    if (source.secretRef) Object.assign(env, dataOf(objects, "Secret", source.secretRef.name));
  }
  for (const entry of container.env ?? []) {
    const ref = entry.valueFrom?.secretKeyRef;
    const value = ref ? dataOf(objects, "Secret", ref.name)[ref.key] : entry.value;
    if (value === undefined) throw new Error(`${entry.name}: no value (secret key missing?)`);
    // Like the kubelet: a reference to a variable not defined before it stays as written.
    env[entry.name] = value.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (ref: string, name: string) => env[name] ?? ref);
  }
  return env;
}

/** Bytes of a Kubernetes memory quantity such as 512Mi. */
const UNIT_BYTES: Record<string, number> = { "": 1, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3 };
function bytes(quantity: string): number {
  const [, amount, unit = ""] = /^(\d+)(Ki|Mi|Gi)?$/.exec(quantity) ?? [];
  return Number(amount) * (UNIT_BYTES[unit] ?? Number.NaN);
}

withKubectl("deploy/kubernetes", () => {
  const rendered: Record<Overlay, KubeObject[]> = { dev: [], production: [] };
  const scratch = mkdtempSync(join(tmpdir(), "kustomize-"));
  beforeAll(() => {
    for (const overlay of OVERLAY_NAMES) rendered[overlay] = render(join(OVERLAYS, overlay), KUBECTL);
  });
  afterAll(() => rmSync(scratch, { recursive: true, force: true }));

  /** Renders `overlay` with one more JSON patch on the object `target`, from a scratch overlay. */
  function renderPatched(overlay: string, target: { kind: string; name: string }, op: object): KubeObject[] {
    const folder = mkdtempSync(join(scratch, "overlay-"));
    // Relative: kustomize refuses absolute paths in resources.
    const kustomization = {
      resources: [relative(folder, join(OVERLAYS, overlay))],
      patches: [{ target, patch: JSON.stringify([op]) }],
    };
    writeFileSync(join(folder, "kustomization.yaml"), JSON.stringify(kustomization));
    return render(folder, KUBECTL);
  }

  describe("validation", () => {
    const SERVICE = ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"];
    const KINDS: Record<Overlay, string[]> = {
      dev: [...SERVICE, "Secret", "Secret", "Service", "StatefulSet"],
      production: [...SERVICE, "Cluster", "Pooler"],
    };
    for (const overlay of OVERLAY_NAMES) {
      it(`renders ${overlay}, and every object is valid with unknown fields rejected`, () => {
        expect(rendered[overlay].map((o) => o.kind).sort()).toEqual(KINDS[overlay].sort());
        expect(validateObjects(rendered[overlay])).toEqual([]);
      });
    }

    it("refuses a misspelled field patched into an overlay, naming it", () => {
      const objects = renderPatched(
        "production",
        { kind: "Deployment", name: "coupon-service" },
        { op: "add", path: "/spec/replicaz", value: 2 },
      );
      expect(validateObjects(objects)).toEqual([
        "Deployment/coupon-service: spec.replicaz: unknown field (not in the schema)",
      ]);
    });

    it("refuses a misspelled CloudNativePG field patched into production, naming it", () => {
      const objects = renderPatched(
        "production",
        { kind: "Pooler", name: "coupons-db-pooler-rw" },
        { op: "add", path: "/spec/pgbouncer/poolMod", value: "transaction" },
      );
      expect(validateObjects(objects)).toEqual(["Pooler/coupons-db-pooler-rw: spec.pgbouncer.poolMod: unknown field"]);
    });

    it("refuses a synchronous stanza the operator would refuse, naming it", () => {
      const patched = (value: object) =>
        validateObjects(
          renderPatched(
            "production",
            { kind: "Cluster", name: "coupons-db" },
            { op: "replace", path: "/spec/postgresql/synchronous", value },
          ),
        );
      expect(patched({ method: "any", number: 3, dataDurabilty: "required" })).toEqual([
        "Cluster/coupons-db: spec.postgresql.synchronous.dataDurabilty: unknown field",
        "Cluster/coupons-db: spec.postgresql.synchronous.number: must be less than the instances plus the standby names listed",
      ]);
      expect(patched({ method: "all", number: 1 })).toEqual([
        "Cluster/coupons-db: spec.postgresql.synchronous.method: Expected union value",
      ]);
    });

    it("refuses unknown fields at any depth, wrong types, and PgBouncer parameters the operator rejects", () => {
      const objects = structuredClone(rendered.production);
      const container = serviceContainer(objects);
      container.lifecycle.preStop.sleep.secondz = 5;
      container.ports[0].containerPort = "3000";
      find(objects, "Pooler").spec.pgbouncer.parameters.max_client_con = "500";
      find(objects, "Pooler").spec.template.spec.containerz = [];
      find(objects, "Cluster").spec.bootstrap.initdb.ownr = "coupons";
      find(objects, "Cluster").spec.instances = "3";
      expect(validateObjects(objects).sort()).toEqual([
        "Cluster/coupons-db: spec.bootstrap.initdb.ownr: unknown field",
        "Cluster/coupons-db: spec.instances: Expected integer",
        "Deployment/coupon-service: spec.template.spec.containers[0].lifecycle.preStop.sleep.secondz: unknown field (not in the schema)",
        "Deployment/coupon-service: spec.template.spec.containers[0].ports[0].containerPort: must be integer",
        "Pooler/coupons-db-pooler-rw: spec.pgbouncer.parameters.max_client_con: unknown field",
        "Pooler/coupons-db-pooler-rw: spec.template.spec.containerz: unknown field (not in the schema)",
      ]);
    });
  });

  describe("the service's pods", () => {
    for (const overlay of OVERLAY_NAMES) {
      it(`${overlay}: every variable is a setting the service knows, and its own loadConfig accepts them`, () => {
        const objects = rendered[overlay];
        const container = serviceContainer(objects);
        const env = environment(objects, container);
        const inputs = new Set(
          (container.env ?? []).flatMap((e: Any) => [...(e.value ?? "").matchAll(/\$\((\w+)\)/g)].map((m) => m[1])),
        );
        expect(Object.keys(env).filter((name) => !SETTINGS.has(name) && !inputs.has(name))).toEqual([]);
        expect(Object.values(env).filter((value) => value.includes("$("))).toEqual([]);
        const config = loadConfig(env);
        expect(config.DATABASE_URL).toStartWith("postgres://");
        expect(config.PORT).toBe(3000);
      });
    }

    it("probe readiness and start-up on /health/ready and liveness on /health/live, on the port PORT names", () => {
      const objects = rendered.production;
      const container = serviceContainer(objects);
      const port = container.ports.find((p: Any) => p.name === "http");
      expect(port.containerPort).toBe(loadConfig(environment(objects, container)).PORT);
      expect(container.startupProbe.httpGet).toEqual({ path: "/health/ready", port: "http" });
      expect(container.readinessProbe.httpGet).toEqual({ path: "/health/ready", port: "http" });
      expect(container.livenessProbe.httpGet).toEqual({ path: "/health/live", port: "http" });
      const service = find(objects, "Service", "coupon-service");
      expect(service.spec.ports).toEqual([{ name: "http", port: 80, targetPort: "http", protocol: "TCP" }]);
    });

    it("leave the endpoints time to go: the grace period is above preStop + SHUTDOWN_DELAY_MS + SHUTDOWN_GRACE_MS", () => {
      for (const objects of Object.values(rendered)) {
        const container = serviceContainer(objects);
        const config = loadConfig(environment(objects, container));
        const preStopMs = container.lifecycle.preStop.sleep.seconds * 1000;
        expect(preStopMs).toBeGreaterThan(0);
        expect(config.SHUTDOWN_DELAY_MS).toBeGreaterThan(0);
        const needed = preStopMs + config.SHUTDOWN_DELAY_MS + config.SHUTDOWN_GRACE_MS;
        expect(podSpec(objects).terminationGracePeriodSeconds * 1000).toBeGreaterThan(needed);
      }
    });

    it("run as distroless's nonroot user on a read-only root, without privileges or a service account token", () => {
      const pod = podSpec(rendered.production);
      expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532 });
      expect(pod.securityContext.seccompProfile).toEqual({ type: "RuntimeDefault" });
      expect(pod.automountServiceAccountToken).toBe(false);
      const container = pod.containers[0];
      expect(container.securityContext).toEqual({
        allowPrivilegeEscalation: false,
        readOnlyRootFilesystem: true,
        runAsNonRoot: true,
        capabilities: { drop: ["ALL"] },
      });
      // Nothing to write to: no volume at all (embedded mode's DATA_DIR is never used, DATABASE_URL is set).
      expect(container.volumeMounts).toBeUndefined();
    });

    it("have requests and limits, the memory limit above the two memory bounds the service enforces", () => {
      const objects = rendered.production;
      const container = serviceContainer(objects);
      const config = loadConfig(environment(objects, container));
      expect(container.resources.requests.cpu).toBeDefined();
      expect(bytes(container.resources.requests.memory)).toBeLessThan(bytes(container.resources.limits.memory));
      const bounds = config.SOLD_OUT_CACHE_BYTES + config.BODY_BYTES_IN_FLIGHT_MAX;
      expect(bytes(container.resources.limits.memory)).toBeGreaterThan(bounds);
    });

    it("spread over nodes and zones, and the Service, PDB and HPA all reach the Deployment's pods", () => {
      const objects = rendered.production;
      const deployment = find(objects, "Deployment", "coupon-service");
      const labels = deployment.spec.template.metadata.labels;
      const spread = deployment.spec.template.spec.topologySpreadConstraints;
      expect(spread.map((c: Any) => c.topologyKey)).toEqual(["kubernetes.io/hostname", "topology.kubernetes.io/zone"]);
      for (const selector of [
        deployment.spec.selector.matchLabels,
        find(objects, "Service", "coupon-service").spec.selector,
        find(objects, "PodDisruptionBudget", "coupon-service").spec.selector.matchLabels,
        ...spread.map((c: Any) => c.labelSelector.matchLabels),
      ])
        expect(labels).toMatchObject(selector);
      const hpa = find(objects, "HorizontalPodAutoscaler", "coupon-service");
      expect(hpa.spec.scaleTargetRef).toEqual({ apiVersion: "apps/v1", kind: "Deployment", name: "coupon-service" });
      expect(hpa.spec.metrics[0].resource.name).toBe("cpu");
      expect(deployment.spec.replicas).toBeUndefined(); // the HPA's to set
      expect(find(rendered.dev, "HorizontalPodAutoscaler").spec.minReplicas).toBe(1);
    });

    it("use the placeholder image in base, and each overlay its own through kustomize images", () => {
      expect(serviceContainer(render(BASE, KUBECTL)).image).toBe("coupon-service:latest");
      expect(serviceContainer(rendered.dev).image).toBe("coupon-service:local");
      expect(serviceContainer(rendered.production).image).toBe("registry.example.com/coupon-service:1.0.0");
    });
  });

  describe("dev", () => {
    it("points DATABASE_URL at the StatefulSet's headless Service, as its user, database and password", () => {
      const objects = rendered.dev;
      const url = new URL(environment(objects, serviceContainer(objects)).DATABASE_URL ?? "");
      const statefulSet = find(objects, "StatefulSet", "postgres");
      const postgres = statefulSet.spec.template.spec.containers[0];
      const postgresEnv = environment(objects, postgres);
      const service = find(objects, "Service", url.hostname);
      expect(service.spec.clusterIP).toBe("None");
      expect(statefulSet.spec.serviceName).toBe(service.metadata.name);
      expect(statefulSet.spec.template.metadata.labels).toMatchObject(service.spec.selector);
      expect(Number(url.port)).toBe(postgres.ports[0].containerPort);
      expect(url.username).toBe(postgresEnv.POSTGRES_USER ?? "");
      expect(url.password).toBe(postgresEnv.POSTGRES_PASSWORD ?? "");
      expect(url.pathname).toBe(`/${postgresEnv.POSTGRES_DB}`);
      expect(statefulSet.spec.volumeClaimTemplates[0].metadata.name).toBe(postgres.volumeMounts[0].name);
    });
  });

  describe("production", () => {
    it("claims through the Pooler; LISTEN and migrations on the primary; credentials from <cluster>-app", () => {
      const objects = rendered.production;
      const env = environment(objects, serviceContainer(objects));
      const cluster = find(objects, "Cluster");
      const pooler = find(objects, "Pooler");
      const database = `/${cluster.spec.bootstrap.initdb.database}`;
      const expect_ = (name: string, host: string) => {
        const url = new URL(env[name] ?? "");
        expect({ name, host: url.hostname, port: url.port, path: url.pathname }).toEqual({
          name,
          host,
          port: "5432",
          path: database,
        });
        expect(url.username).toBe(APP_USER);
      };
      expect_("DATABASE_URL", pooler.metadata.name);
      expect_("LISTEN_DATABASE_URL", `${cluster.metadata.name}-rw`);
      expect_("MIGRATION_DATABASE_URL", `${cluster.metadata.name}-rw`);
      const secretRefs = serviceContainer(objects)
        .env.filter((e: Any) => e.valueFrom?.secretKeyRef)
        .map((e: Any) => e.valueFrom.secretKeyRef);
      const appSecret = `${cluster.metadata.name}-app`;
      expect(secretRefs).toEqual([
        { name: appSecret, key: "username" },
        { name: appSecret, key: "password" },
      ]);
      expect(pooler.spec.cluster.name).toBe(cluster.metadata.name);
      expect(cluster.spec.instances).toBe(3);
      expect(cluster.spec.bootstrap.initdb.owner).toBe(APP_USER);
    });

    it("replicates synchronously: a standby confirms every commit, and only a standby known to have them all is promoted", () => {
      const cluster = find(rendered.production, "Cluster");
      expect(cluster.spec.postgresql.synchronous).toEqual({
        method: "any",
        number: 1,
        dataDurability: "required",
        failoverQuorum: true,
      });
      // At least one standby confirms, and one can be down without writes waiting.
      expect(cluster.spec.instances - 1).toBeGreaterThan(cluster.spec.postgresql.synchronous.number);
      // Nothing turns it off per transaction.
      expect(cluster.spec.postgresql.parameters.synchronous_commit).toBeUndefined();
    });

    it("pools in transaction mode on the primary, ignoring every startup parameter the service sends", () => {
      const objects = rendered.production;
      const pooler = find(objects, "Pooler");
      expect(pooler.spec.type).toBe("rw");
      expect(pooler.spec.pgbouncer.poolMode).toBe("transaction");
      expect(pooler.spec.instances).toBeGreaterThanOrEqual(2);
      const config = loadConfig(environment(objects, serviceContainer(objects)));
      const sent = Object.keys(postgresOptions(config).connection ?? {}).filter((key) => key !== "application_name");
      expect(sent.length).toBeGreaterThan(0);
      const ignored = pooler.spec.pgbouncer.parameters.ignore_startup_parameters.split(",");
      expect(ignored).toEqual(expect.arrayContaining(sent));
    });

    it("sets those parameters on the service's role instead, with the values the service would send", () => {
      const objects = rendered.production;
      const initdb = find(objects, "Cluster").spec.bootstrap.initdb;
      const config = loadConfig(environment(objects, serviceContainer(objects)));
      const { application_name: _, ...sent } = postgresOptions(config).connection ?? {};
      const onRole: Record<string, number> = {};
      for (const statement of initdb.postInitApplicationSQL) {
        const [, role, name = "", amount, unit] = /^ALTER ROLE (\w+) SET (\w+) = '(\d+)(ms|s)'$/.exec(statement) ?? [];
        expect(role).toBe(initdb.owner);
        onRole[name] = Number(amount) * (unit === "s" ? 1000 : 1);
      }
      expect(onRole).toEqual(sent as Record<string, number>);
    });
  });
});
