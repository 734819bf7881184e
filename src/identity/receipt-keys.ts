// The keys receipts are signed with: Ed25519 keys as a JWK Set (RECEIPT_KEYS, or the file
// RECEIPT_KEYS_FILE names), several at once for rotation, one of them signing (RECEIPT_SIGNING_KEY);
// every key in the set is published (GET /.well-known/jwks.json) so receipts signed by a retired key
// still verify. Embedded mode with none configured makes one on its first start and keeps it in
// DATA_DIR. No error or log line ever carries private key material: messages name keys by their kid.
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject, randomUUID } from "node:crypto";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { invalidConfiguration } from "../config";

/** A public key as published in the JWK Set. */
export interface PublicJwk {
  kty: "OKP";
  crv: "Ed25519";
  x: string;
  kid: string;
  alg: "EdDSA";
  use: "sig";
}

/** The signing key and every key to publish (the signing one included). */
export interface ReceiptKeys {
  signing: { kid: string; key: KeyObject };
  published: PublicJwk[];
}

/** The settings that say where the keys are (config.ts names them). */
export interface ReceiptKeySettings {
  RECEIPT_KEYS?: string;
  RECEIPT_KEYS_FILE?: string;
  RECEIPT_SIGNING_KEY?: string;
}

/** The file embedded mode keeps its generated key in, under DATA_DIR. */
export const GENERATED_KEYS_FILE = "receipt-keys.json";

const BASE64URL_32 = /^[A-Za-z0-9_-]{43}$/;

/** A refused key set, as a bad setting stops the start: `source` names where it came from, never what it holds. */
const refused = (source: string, problem: string) => invalidConfiguration([`${source}: ${problem}`]);

interface ParsedKey {
  kid: string;
  x: string;
  /** The private key, when the JWK holds one (imported once, to check it, and kept to sign with). */
  privateKey?: KeyObject;
}

/** One JWK of the set, checked: an Ed25519 key with a kid, and a private part that matches its public one. */
function parseKey(value: unknown, index: number, source: string): ParsedKey {
  const where = `key ${index + 1}`;
  if (typeof value !== "object" || value === null) throw refused(source, `${where} is not a JSON object (a JWK)`);
  const jwk = value as Record<string, unknown>;
  if (typeof jwk.kid !== "string" || jwk.kid.length === 0) throw refused(source, `${where} has no "kid"`);
  const named = `key "${jwk.kid}"`;
  if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519")
    throw refused(
      source,
      `${named} is not an Ed25519 key (receipts are signed with EdDSA over Ed25519: kty "OKP", crv "Ed25519")`,
    );
  if (typeof jwk.x !== "string" || !BASE64URL_32.test(jwk.x))
    throw refused(source, `${named} has no valid "x" (32 bytes, base64url)`);
  if (jwk.d === undefined) return { kid: jwk.kid, x: jwk.x };
  if (typeof jwk.d !== "string" || !BASE64URL_32.test(jwk.d))
    throw refused(source, `${named} has an invalid "d" (32 bytes, base64url)`);
  const privateKey = createPrivateKey({ key: { kty: "OKP", crv: "Ed25519", x: jwk.x, d: jwk.d }, format: "jwk" });
  if (createPublicKey(privateKey).export({ format: "jwk" }).x !== jwk.x)
    throw refused(source, `${named}: its private part ("d") does not belong to its public part ("x")`);
  return { kid: jwk.kid, x: jwk.x, privateKey };
}

/**
 * The key set in `text` (a JWK Set `{"keys": [...]}`, or one JWK), with `signingKid` signing: unset,
 * the set's only private key. Throws an Error naming `source` and the problem, never a key's secret.
 */
export function parseReceiptKeys(text: string, signingKid: string | undefined, source: string): ReceiptKeys {
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch {
    throw refused(source, 'not JSON (expected a JWK Set: {"keys": [...]})');
  }
  const list = (document as { keys?: unknown })?.keys ?? document;
  const keys = (Array.isArray(list) ? list : [list]).map((key, index) => parseKey(key, index, source));
  if (keys.length === 0) throw refused(source, "the key set is empty");
  const kids = new Set<string>();
  for (const { kid } of keys) {
    if (kids.has(kid)) throw refused(source, `two keys share the kid "${kid}"`);
    kids.add(kid);
  }
  const privates = keys.filter((key) => key.privateKey !== undefined);
  const signing = signingKid === undefined ? privates : keys.filter((key) => key.kid === signingKid);
  if (signingKid !== undefined && signing.length === 0)
    throw refused(source, `RECEIPT_SIGNING_KEY names "${signingKid}", which is not in the set`);
  const [chosen] = signing;
  if (!chosen?.privateKey) {
    throw refused(
      source,
      signingKid === undefined
        ? 'no private key ("d") to sign with'
        : `key "${signingKid}" (RECEIPT_SIGNING_KEY) has no private part ("d") to sign with`,
    );
  }
  if (signing.length > 1)
    throw refused(source, `${signing.length} private keys: name the one that signs with RECEIPT_SIGNING_KEY`);
  return {
    signing: { kid: chosen.kid, key: chosen.privateKey },
    published: keys.map(({ kid, x }) => ({ kty: "OKP", crv: "Ed25519", x, kid, alg: "EdDSA", use: "sig" })),
  };
}

/** A new key set of one Ed25519 key, as JSON (private: write it where only the service reads). */
export function generateReceiptKeys(): string {
  const { privateKey } = generateKeyPairSync("ed25519");
  const { x, d } = privateKey.export({ format: "jwk" });
  return `${JSON.stringify({ keys: [{ kty: "OKP", crv: "Ed25519", kid: randomUUID(), x, d }] }, null, 2)}\n`;
}

/** The key set in DATA_DIR, made on the first start (readable by this user alone). */
async function generatedKeys(dataDir: string): Promise<{ text: string; path: string }> {
  const path = join(dataDir, GENERATED_KEYS_FILE);
  try {
    return { text: await readFile(path, "utf8"), path };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
  await mkdir(dataDir, { recursive: true });
  // Written aside and renamed: a start killed halfway leaves no half-written key set behind.
  const partial = `${path}.${process.pid}.partial`;
  const text = generateReceiptKeys();
  await writeFile(partial, text, { mode: 0o600 });
  await rename(partial, path);
  return { text, path };
}

/** The receipt keys the settings give: RECEIPT_KEYS, else the file RECEIPT_KEYS_FILE; else none. */
export async function configuredReceiptKeys(settings: ReceiptKeySettings): Promise<ReceiptKeys | undefined> {
  const signing = settings.RECEIPT_SIGNING_KEY;
  if (settings.RECEIPT_KEYS) return parseReceiptKeys(settings.RECEIPT_KEYS, signing, "RECEIPT_KEYS");
  if (!settings.RECEIPT_KEYS_FILE) return undefined;
  const source = `RECEIPT_KEYS_FILE=${settings.RECEIPT_KEYS_FILE}`;
  const text = await readFile(settings.RECEIPT_KEYS_FILE, "utf8").catch((error: NodeJS.ErrnoException) => {
    throw refused(source, `cannot read the file (${error.code ?? error.message})`);
  });
  return parseReceiptKeys(text, signing, source);
}

/**
 * Embedded mode's own keys, when none is configured: the set kept in `dataDir`, made on the first
 * start; a database in memory (memory://) keeps its key in memory too. Call it once the process holds
 * DATA_DIR, so two processes never make two keys.
 */
export async function embeddedReceiptKeys(dataDir: string): Promise<ReceiptKeys> {
  if (dataDir.startsWith("memory://")) return parseReceiptKeys(generateReceiptKeys(), undefined, "generated");
  const { text, path } = await generatedKeys(dataDir);
  return parseReceiptKeys(text, undefined, path);
}
