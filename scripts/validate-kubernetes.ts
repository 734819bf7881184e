// `bun scripts/validate-kubernetes.ts [overlay folder...]`: renders each Kustomize overlay (default: both
// under deploy/kubernetes/overlays) with `kubectl kustomize` and validates every object offline, with
// unknown fields rejected, as `kubectl apply --validate=strict` would against a cluster. Exits 1 listing
// every problem. test/deploy/kubernetes.test.ts uses the same functions.
//
// Kubernetes objects: the validators of the `kubernetes-models` package, generated from the Kubernetes
// OpenAPI schema. They accept unknown fields and have no option to refuse them, but they read every
// field their schema declares, and only those: each object is validated through a Proxy that records the
// keys read, and a key never read is a field the schema does not have.
// CloudNativePG objects: no npm package ships the CRD, so their shape is written out below (keys as in
// the CRDs of CloudNativePG 1.30), and the Kubernetes types they embed go through the validators above.
import { join } from "node:path";
import { type TSchema, Type } from "@sinclair/typebox";
import { Value } from "@sinclair/typebox/value";
import { validate as deployment } from "kubernetes-models/_schemas/IoK8sApiAppsV1Deployment";
import { validate as statefulSet } from "kubernetes-models/_schemas/IoK8sApiAppsV1StatefulSet";
import { validate as hpa } from "kubernetes-models/_schemas/IoK8sApiAutoscalingV2HorizontalPodAutoscaler";
import { validate as configMap } from "kubernetes-models/_schemas/IoK8sApiCoreV1ConfigMap";
import { validate as podTemplateSpec } from "kubernetes-models/_schemas/IoK8sApiCoreV1PodTemplateSpec";
import { validate as secret } from "kubernetes-models/_schemas/IoK8sApiCoreV1Secret";
import { validate as service } from "kubernetes-models/_schemas/IoK8sApiCoreV1Service";
import { validate as topologySpread } from "kubernetes-models/_schemas/IoK8sApiCoreV1TopologySpreadConstraint";
import { validate as pdb } from "kubernetes-models/_schemas/IoK8sApiPolicyV1PodDisruptionBudget";

export const OVERLAYS = join(import.meta.dir, "../deploy/kubernetes/overlays");

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; [key: string]: unknown };
  [key: string]: unknown;
}

interface SchemaError {
  instancePath: string;
  keyword: string;
  params: Record<string, unknown>;
}
type Validator = ((data: unknown) => boolean) & { errors?: SchemaError[] | null };

/** The validator of each kind these manifests use, by apiVersion/kind. */
const KUBERNETES: Record<string, Validator> = {
  "apps/v1/Deployment": deployment,
  "apps/v1/StatefulSet": statefulSet,
  "autoscaling/v2/HorizontalPodAutoscaler": hpa,
  "policy/v1/PodDisruptionBudget": pdb,
  "v1/ConfigMap": configMap,
  "v1/Secret": secret,
  "v1/Service": service,
};

/** Runs `kubectl kustomize <folder>` and parses its YAML stream; throws with kubectl's words on failure. */
export function render(folder: string, kubectl = Bun.which("kubectl") ?? "kubectl"): KubeObject[] {
  const run = Bun.spawnSync([kubectl, "kustomize", folder], { stdout: "pipe", stderr: "pipe" });
  if (run.exitCode !== 0) throw new Error(`kubectl kustomize ${folder} failed: ${run.stderr.toString().trim()}`);
  const parsed = Bun.YAML.parse(run.stdout.toString());
  return (Array.isArray(parsed) ? parsed : [parsed]).filter(Boolean) as KubeObject[];
}

/** `spec.containers[0].name` from a JSON pointer such as `/spec/containers/0/name`. */
function dotted(pointer: string): string {
  return pointer
    .split("/")
    .slice(1)
    .map((part) => (/^\d+$/.test(part) ? `[${part}]` : `.${part.replaceAll("~1", "/").replaceAll("~0", "~")}`))
    .join("")
    .replace(/^\./, "");
}

function describeError({ keyword, params }: SchemaError): string {
  if (keyword === "type") return `must be ${params.type}`;
  if (keyword === "required") return `missing required field ${params.missingProperty}`;
  if (keyword === "enum") return `must be one of ${JSON.stringify(params.allowedValues)}`;
  return `${keyword} ${JSON.stringify(params)}`;
}

/** Validates `value` with a kubernetes-models validator, unknown fields rejected; problems as "path: what". */
export function strictly(validator: Validator, value: unknown, prefix = ""): string[] {
  const read = new WeakMap<object, Set<string>>();
  const proxies = new WeakMap<object, object>();
  const watch = (node: unknown): unknown => {
    if (node === null || typeof node !== "object") return node;
    const known = proxies.get(node);
    if (known) return known;
    const keys = new Set<string>();
    read.set(node, keys);
    const proxy = new Proxy(node, {
      get: (target, key) => {
        if (typeof key === "string") keys.add(key);
        return watch(Reflect.get(target, key));
      },
      has: (target, key) => {
        if (typeof key === "string") keys.add(key);
        return Reflect.has(target, key);
      },
    });
    proxies.set(node, proxy);
    return proxy;
  };
  const at = (path: string) => (prefix && path ? `${prefix}.${path}` : prefix || path).replace(".[", "[");
  const problems = validator(watch(value))
    ? []
    : (validator.errors ?? []).map((error) => `${at(dotted(error.instancePath)) || "(root)"}: ${describeError(error)}`);
  const unknown = (node: unknown, path: string) => {
    if (node === null || typeof node !== "object") return;
    for (const [key, child] of Object.entries(node)) {
      const childPath = Array.isArray(node) ? `${path}[${key}]` : path ? `${path}.${key}` : key;
      if (read.get(node)?.has(key)) unknown(child, childPath);
      else problems.push(`${at(childPath)}: unknown field (not in the schema)`);
    }
  };
  unknown(value, "");
  return problems;
}

// ---- CloudNativePG 1.30 (postgresql.cnpg.io/v1) ---------------------------------------------------------
// Every key the CRD declares at each level used here, so a misspelled one is refused; the types are
// checked for the fields these manifests set, `Any` marks the others.

const Any = Type.Unknown();
const Strict = (properties: Record<string, TSchema>, required: string[] = []) =>
  Type.Object(
    Object.fromEntries(
      Object.entries(properties).map(([key, schema]) => [key, required.includes(key) ? schema : Type.Optional(schema)]),
    ),
    { additionalProperties: false },
  );
const anyOf = (keys: string) => Object.fromEntries(keys.split(" ").map((key) => [key, Any]));
const Metadata = Strict({
  name: Type.String({ minLength: 1 }),
  namespace: Type.String(),
  labels: Type.Record(Type.String(), Type.String()),
  annotations: Type.Record(Type.String(), Type.String()),
});

const ClusterSpec = Strict(
  {
    ...anyOf(
      "backup certificates description enablePDB enableSuperuserAccess env envFrom ephemeralVolumeSource " +
        "ephemeralVolumesSizeLimit externalClusters failoverDelay imageCatalogRef imageName imagePullPolicy " +
        "imagePullSecrets inheritedMetadata livenessProbeTimeout logLevel managed maxSyncReplicas minSyncReplicas " +
        "monitoring nodeMaintenanceWindow plugins podSecurityContext podSelectorRefs postgresGID postgresUID " +
        "primaryLease primaryUpdateMethod priorityClassName probes projectedVolumeTemplate replica replicationSlots " +
        "resources schedulerName seccompProfile securityContext serviceAccountName serviceAccountTemplate " +
        "smartShutdownTimeout startDelay stopDelay superuserSecret switchoverDelay tablespaces walStorage",
    ),
    instances: Type.Integer({ minimum: 1 }),
    primaryUpdateStrategy: Type.Union([Type.Literal("unsupervised"), Type.Literal("supervised")]),
    storage: Strict({ ...anyOf("pvcTemplate resizeInUseVolumes"), size: Type.String(), storageClass: Type.String() }),
    affinity: Strict({
      ...anyOf("additionalPodAffinity additionalPodAntiAffinity nodeAffinity nodeSelector tolerations"),
      enablePodAntiAffinity: Type.Boolean(),
      podAntiAffinityType: Type.Union([Type.Literal("preferred"), Type.Literal("required")]),
      topologyKey: Type.String(),
    }),
    topologySpreadConstraints: Type.Array(Any),
    postgresql: Strict({
      ...anyOf(
        "enableAlterSystem extensions ldap pg_hba pg_ident promotionTimeout shared_preload_libraries " +
          "syncReplicaElectionConstraint",
      ),
      parameters: Type.Record(Type.String(), Type.String()),
      synchronous: Strict(
        {
          ...anyOf("maxStandbyNamesFromCluster standbyNamesPre standbyNamesPost"),
          method: Type.Union([Type.Literal("any"), Type.Literal("first")]),
          number: Type.Integer({ minimum: 1 }),
          dataDurability: Type.Union([Type.Literal("required"), Type.Literal("preferred")]),
          failoverQuorum: Type.Boolean(),
        },
        ["method", "number"],
      ),
    }),
    bootstrap: Strict({
      ...anyOf("pg_basebackup recovery"),
      initdb: Strict({
        ...anyOf(
          "builtinLocale dataChecksums encoding icuLocale icuRules import locale localeCType localeCollate " +
            "localeProvider options postInitApplicationSQLRefs postInitSQL postInitSQLRefs postInitTemplateSQL " +
            "postInitTemplateSQLRefs secret walSegmentSize",
        ),
        database: Type.String({ minLength: 1 }),
        owner: Type.String({ minLength: 1 }),
        postInitApplicationSQL: Type.Array(Type.String()),
      }),
    }),
  },
  ["instances"],
);

/** The PgBouncer parameters the operator's webhook accepts (internal/webhook/v1/pooler_webhook.go). */
const PGBOUNCER_PARAMETERS =
  "application_name_add_host auth_type auth_user autodb_idle_timeout cancel_wait_timeout client_idle_timeout " +
  "client_login_timeout client_tls_ciphers client_tls_sslmode client_tls13_ciphers default_pool_size " +
  "disable_pqexec dns_max_ttl dns_nxdomain_ttl idle_transaction_timeout ignore_startup_parameters listen_backlog " +
  "log_connections log_disconnections log_pooler_errors log_stats max_client_conn max_db_connections " +
  "max_packet_size max_prepared_statements max_user_connections min_pool_size pkt_buf query_timeout " +
  "query_wait_timeout reserve_pool_size reserve_pool_timeout sbuf_loopcnt server_check_delay server_check_query " +
  "server_connect_timeout server_fast_close server_idle_timeout server_lifetime server_login_retry " +
  "server_reset_query server_reset_query_always server_round_robin server_tls_ciphers server_tls13_ciphers " +
  "server_tls_protocols server_tls_sslmode stats_period suspend_timeout tcp_defer_accept tcp_socket_buffer " +
  "tcp_keepalive tcp_keepcnt tcp_keepidle tcp_keepintvl tcp_user_timeout track_extra_parameters verbose";

const PoolerSpec = Strict(
  {
    ...anyOf("deploymentStrategy monitoring serviceAccountName serviceTemplate"),
    cluster: Strict({ name: Type.String({ minLength: 1 }) }, ["name"]),
    type: Type.Union([Type.Literal("rw"), Type.Literal("ro"), Type.Literal("r")]),
    instances: Type.Integer({ minimum: 0 }),
    pgbouncer: Strict({
      ...anyOf(
        "authQuery authQuerySecret clientCASecret clientTLSSecret image imageCatalogRef paused pg_hba " +
          "serverCASecret serverTLSSecret",
      ),
      poolMode: Type.Union([Type.Literal("session"), Type.Literal("transaction")]),
      parameters: Strict(Object.fromEntries(PGBOUNCER_PARAMETERS.split(" ").map((key) => [key, Type.String()]))),
    }),
    template: Any,
  },
  ["cluster", "pgbouncer"],
);

/** What the operator refuses across a Cluster's fields (CRD rules and internal/webhook/v1/cluster_webhook.go). */
function clusterRules(spec: any): string[] {
  const sync = spec?.postgresql?.synchronous;
  if (!sync || typeof sync !== "object") return [];
  const at = "spec.postgresql.synchronous";
  const named = (sync.standbyNamesPre?.length ?? 0) + (sync.standbyNamesPost?.length ?? 0);
  const problems: string[] = [];
  if (sync.number >= spec.instances + named)
    problems.push(`${at}.number: must be less than the instances plus the standby names listed`);
  if (sync.failoverQuorum && sync.number <= named)
    problems.push(`${at}.failoverQuorum: needs number above the standby names listed`);
  if (sync.dataDurability === "preferred" && named > 0)
    problems.push(`${at}.dataDurability: preferred needs no standbyNamesPre or standbyNamesPost`);
  if (spec.minSyncReplicas > 0 || spec.maxSyncReplicas > 0)
    problems.push(`${at}: not together with the legacy minSyncReplicas or maxSyncReplicas`);
  return problems;
}

const CustomResource = (spec: TSchema) =>
  Strict({ apiVersion: Type.String(), kind: Type.String(), metadata: Metadata, spec }, ["metadata", "spec"]);

/** Each CloudNativePG kind: its shape, and where it embeds Kubernetes types (validated as those). */
const CLOUDNATIVE_PG: Record<
  string,
  { shape: TSchema; embedded: (spec: any) => [string, Validator, unknown][]; rules?: (spec: any) => string[] }
> = {
  "postgresql.cnpg.io/v1/Cluster": {
    shape: CustomResource(ClusterSpec),
    rules: clusterRules,
    embedded: (spec) =>
      (Array.isArray(spec?.topologySpreadConstraints) ? spec.topologySpreadConstraints : []).map(
        (item: unknown, i: number) => [`spec.topologySpreadConstraints[${i}]`, topologySpread, item],
      ),
  },
  "postgresql.cnpg.io/v1/Pooler": {
    shape: CustomResource(PoolerSpec),
    embedded: (spec) => (spec?.template === undefined ? [] : [["spec.template", podTemplateSpec, spec.template]]),
  },
};

/** Every problem of one object, each prefixed with Kind/name; [] when it is valid. */
export function validateObject(object: KubeObject): string[] {
  const type = `${object.apiVersion}/${object.kind}`;
  const name = `${object.kind}/${object.metadata?.name}`;
  const kubernetes = KUBERNETES[type];
  const custom = CLOUDNATIVE_PG[type];
  let problems: string[];
  if (kubernetes) problems = strictly(kubernetes, object);
  else if (custom) {
    problems = [...Value.Errors(custom.shape, object)].map(
      (error) => `${dotted(error.path)}: ${error.message === "Unexpected property" ? "unknown field" : error.message}`,
    );
    for (const [path, validator, value] of custom.embedded(object.spec))
      problems.push(...strictly(validator, value, path));
    problems.push(...(custom.rules?.(object.spec) ?? []));
  } else problems = [`no schema for ${type}: add its validator to scripts/validate-kubernetes.ts`];
  return problems.map((problem) => `${name}: ${problem}`);
}

/** Every problem of every object. */
export function validateObjects(objects: KubeObject[]): string[] {
  return objects.flatMap(validateObject);
}

if (import.meta.main) {
  const folders =
    process.argv.length > 2 ? process.argv.slice(2) : [join(OVERLAYS, "dev"), join(OVERLAYS, "production")];
  let failed = false;
  for (const folder of folders) {
    const objects = render(folder);
    const problems = validateObjects(objects);
    failed ||= problems.length > 0;
    console.log(`${folder}: ${objects.length} objects, ${problems.length} problems`);
    for (const problem of problems) console.log(`  - ${problem}`);
  }
  process.exit(failed ? 1 : 0);
}
