/**
 * Request signing for sites and users: Ed25519 over a canonical string that binds method, path (with query),
 * body digest, timestamp and nonce, so a captured request cannot be replayed, redirected or altered.
 *
 *   SETU-ED25519\n<METHOD>\n<path with query>\n<sha256 hex of body>\n<timestamp ms>\n<nonce>
 *
 * Headers: x-setu-key-id, x-setu-timestamp, x-setu-nonce, x-setu-signature (base64url, 64 bytes), and
 * x-setu-content-sha256 (the body digest of the canonical string, hex). The digest header lets a receiver check the
 * signature from the headers alone, before it reads a byte of the body, and then check the bytes it receives
 * against the digest; a request without it declares an empty body.
 *
 * A chunk of an upload may instead be signed UNSIGNED-PAYLOAD style (`signChunkRequest`): it declares the chunk's
 * SHA-256 in x-setu-chunk-sha256 and the canonical string's digest line is `UNSIGNED-PAYLOAD:<that digest>`, so the
 * signature covers the declared digest (and cannot be mistaken for a request whose body the receiver's plugin
 * checked). The receiver does not read the body before its handler: the route that accepts such requests (and only
 * such a route) streams the bytes to where they go, hashes them once on the way and keeps nothing unless they hash to
 * the declared digest (coordinator/routes/uploads.ts). A request may carry one of the two digest headers, not both.
 * The verifier never throws on anything a client controls: it answers {ok:false, status:401, reason}.
 */
import {
  createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign, verify, type KeyObject,
} from 'node:crypto';

export const SIGNING_SCHEME = 'SETU-ED25519';
export const HEADER_KEY_ID = 'x-setu-key-id';
export const HEADER_TIMESTAMP = 'x-setu-timestamp';
export const HEADER_NONCE = 'x-setu-nonce';
export const HEADER_SIGNATURE = 'x-setu-signature';
export const HEADER_CONTENT_SHA256 = 'x-setu-content-sha256';
/** An upload chunk's SHA-256 (hex), signed in place of the body digest (`signChunkRequest`). */
export const HEADER_CHUNK_SHA256 = 'x-setu-chunk-sha256';
/** The canonical string's digest line of a request signed over a declared chunk digest: this prefix, then the digest. */
export const UNSIGNED_PAYLOAD = 'UNSIGNED-PAYLOAD:';
export const DEFAULT_MAX_SKEW_MS = 5 * 60 * 1000;

export interface SigningKeys {
  publicKey: KeyObject;
  privateKey: KeyObject;
  /** SPKI PEM, for files and the store. */
  publicKeyPem: string;
  /** PKCS#8 PEM; stays on the machine that made it. */
  privateKeyPem: string;
  /** The 32-byte raw public key, base64url: short enough to paste into an invite or a config. */
  publicKeyRaw: string;
}

export function generateSigningKeys(): SigningKeys {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  return {
    publicKey,
    privateKey,
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKeyRaw: publicKeyToRaw(publicKey),
  };
}

export function publicKeyToRaw(key: KeyObject): string {
  const jwk = key.export({ format: 'jwk' });
  if (jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || typeof jwk.x !== 'string') throw new Error('not an Ed25519 public key');
  return jwk.x;
}

/** Accepts an SPKI PEM or a raw base64url key; throws a plain Error naming the problem (config-time input). */
export function importPublicKey(pemOrRaw: string): KeyObject {
  const s = pemOrRaw.trim();
  let key: KeyObject;
  if (s.startsWith('-----BEGIN')) {
    key = createPublicKey(s);
  } else {
    if (!/^[A-Za-z0-9_-]{43}$/.test(s)) throw new Error('raw Ed25519 public key must be 32 bytes in base64url (43 characters)');
    key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: s }, format: 'jwk' });
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`expected an Ed25519 key, got ${key.asymmetricKeyType}`);
  return key;
}

/** Public keys already imported, by their stored text (at most KEY_CACHE_SIZE, the oldest dropped first). */
const keyCache = new Map<string, KeyObject>();
const KEY_CACHE_SIZE = 10_000;

/**
 * `importPublicKey` once per key text: importing the caller's key from its JWK on every request was a tenth of the
 * verification's cost. Keyed by the stored text itself, so a rotated or revoked key (whose text the store no longer
 * returns) is never verified against from here.
 */
function cachedPublicKey(text: string): KeyObject {
  let key = keyCache.get(text);
  if (!key) {
    key = importPublicKey(text);
    if (keyCache.size >= KEY_CACHE_SIZE) keyCache.delete(keyCache.keys().next().value!);
    keyCache.set(text, key);
  }
  return key;
}

export function importPrivateKey(pem: string): KeyObject {
  const key = createPrivateKey(pem);
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`expected an Ed25519 private key, got ${key.asymmetricKeyType}`);
  return key;
}

export type Body = Uint8Array | string | null | undefined;

/** The SHA-256 of an empty body: what a signed request without x-setu-content-sha256 declares. */
export const EMPTY_BODY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

export function bodySha256Hex(body: Body): string {
  const h = createHash('sha256');
  if (typeof body === 'string') h.update(body, 'utf8');
  else if (body) h.update(body);
  return h.digest('hex');
}

export function canonicalRequestString(method: string, path: string, bodyHashHex: string, timestampMs: number, nonce: string): string {
  return [SIGNING_SCHEME, method.toUpperCase(), path, bodyHashHex, String(timestampMs), nonce].join('\n');
}

/** A type alias (not an interface) so it is assignable to header records such as HeaderBag and fetch's HeadersInit. */
export type SignedHeaders = {
  'x-setu-key-id': string;
  'x-setu-timestamp': string;
  'x-setu-nonce': string;
  'x-setu-signature': string;
  'x-setu-content-sha256': string;
};

export interface SignRequestInput {
  method: string;
  /** Path with query exactly as it will appear in the request line, e.g. "/v1/tasks?wait=30". */
  path: string;
  body?: Body;
  keyId: string;
  privateKey: KeyObject | string;
  now?: number;
  nonce?: string;
}

const KEY_ID_RE = /^[\x21-\x7e]{1,256}$/;
const NONCE_RE = /^[A-Za-z0-9_-]{16,128}$/;
const TIMESTAMP_RE = /^[0-9]{1,16}$/;
const SIGNATURE_RE = /^[A-Za-z0-9_-]{86}$/; // 64 bytes, unpadded base64url
const DIGEST_RE = /^[0-9a-f]{64}$/;

export function newNonce(): string {
  return randomBytes(18).toString('base64url');
}

export function signRequest(input: SignRequestInput): SignedHeaders {
  const digest = bodySha256Hex(input.body);
  return { ...signWith(input, digest), 'x-setu-content-sha256': digest };
}

/** The headers of a chunk upload signed over its declared digest (UNSIGNED-PAYLOAD style): the body is not hashed here. */
export type ChunkSignedHeaders = Omit<SignedHeaders, 'x-setu-content-sha256'> & { 'x-setu-chunk-sha256': string };

/**
 * Signs a request over `chunkSha256`, the SHA-256 (hex) of the body the caller will send, without hashing a body
 * here (the caller hashed it once already, or knows it). The receiver must check the bytes against it.
 */
export function signChunkRequest(input: Omit<SignRequestInput, 'body'> & { chunkSha256: string }): ChunkSignedHeaders {
  if (!DIGEST_RE.test(input.chunkSha256)) throw new Error('chunkSha256 must be a SHA-256 in lower-case hex (64 characters)');
  return { ...signWith(input, UNSIGNED_PAYLOAD + input.chunkSha256), 'x-setu-chunk-sha256': input.chunkSha256 };
}

function signWith(input: Omit<SignRequestInput, 'body'>, digestLine: string): Omit<SignedHeaders, 'x-setu-content-sha256'> {
  const ts = input.now ?? Date.now();
  const nonce = input.nonce ?? newNonce();
  // Refuse to sign what the verifier would refuse, so mistakes surface at the caller, not as a 401 later.
  if (!KEY_ID_RE.test(input.keyId)) throw new Error('keyId must be 1-256 printable ASCII characters without spaces');
  if (!NONCE_RE.test(nonce)) throw new Error('nonce must be 16-128 base64url characters');
  if (!Number.isSafeInteger(ts) || ts < 0) throw new Error('timestamp must be a non-negative integer of milliseconds');
  if (/[\r\n]/.test(input.path) || !input.path.startsWith('/')) throw new Error('path must start with "/" and hold no line breaks');
  const key = typeof input.privateKey === 'string' ? importPrivateKey(input.privateKey) : input.privateKey;
  const msg = canonicalRequestString(input.method, input.path, digestLine, ts, nonce);
  return {
    'x-setu-key-id': input.keyId,
    'x-setu-timestamp': String(ts),
    'x-setu-nonce': nonce,
    'x-setu-signature': sign(null, Buffer.from(msg, 'utf8'), key).toString('base64url'),
  };
}

export type HeaderBag = Record<string, string | string[] | undefined>;
type Awaitable<T> = T | Promise<T>;

export interface VerifyRequestInput {
  method: string;
  path: string;
  /**
   * The body, when it has been read. Without it the signature is checked against the digest the request
   * declares (x-setu-content-sha256, or an empty body), and the caller must check the bytes it then reads.
   */
  body?: Body;
  headers: HeaderBag;
  /** The registered, unrevoked public key for keyId, or null/undefined when unknown. */
  publicKeyFor: (keyId: string) => Awaitable<KeyObject | string | null | undefined>;
  now: number;
  maxSkewMs?: number;
  /**
   * Records (keyId, nonce) and returns true when it had been seen before (a replay). Called only after the
   * signature checks out, so forged requests cannot fill the store or burn a legitimate client's nonces.
   * Keep nonces at least 2 × maxSkewMs: older timestamps are refused anyway.
   */
  nonceSeen: (keyId: string, nonce: string, timestampMs: number) => Awaitable<boolean>;
}

export type VerifyResult =
  | {
      ok: true; keyId: string; nonce: string; timestampMs: number;
      /** The body digest the signature covers. */
      bodySha256: string;
      /** Set when it covers a declared chunk digest (x-setu-chunk-sha256): nobody has checked the body yet. */
      unsignedPayload?: true;
    }
  | { ok: false; status: 401; reason: string };

const refuse = (reason: string): VerifyResult => ({ ok: false, status: 401, reason });

function header(headers: HeaderBag, name: string): string | { error: string } {
  // Node lower-cases incoming header names; accept any case from other callers.
  let v = headers[name];
  if (v === undefined) {
    for (const k of Object.keys(headers)) if (k.toLowerCase() === name) { v = headers[k]; break; }
  }
  if (v === undefined) return { error: `missing ${name} header` };
  if (Array.isArray(v)) return { error: `${name} header given more than once` };
  if (typeof v !== 'string') return { error: `${name} header is not a string` };
  return v;
}

function optionalHeader(headers: HeaderBag, name: string): string | undefined | { error: string } {
  const v = header(headers, name);
  if (typeof v === 'string') return v;
  return v.error.startsWith('missing') ? undefined : v;
}

/**
 * Verify a signed request. Async because the key and nonce lookups are backed by the store; the callbacks
 * may still be synchronous. Errors thrown by the callbacks themselves (the store failing) propagate.
 */
export async function verifyRequest(input: VerifyRequestInput): Promise<VerifyResult> {
  const maxSkew = input.maxSkewMs ?? DEFAULT_MAX_SKEW_MS;
  const vals: string[] = [];
  for (const name of [HEADER_KEY_ID, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE]) {
    const v = header(input.headers, name);
    if (typeof v !== 'string') return refuse(v.error);
    vals.push(v);
  }
  const [keyId, tsText, nonce, sigText] = vals as [string, string, string, string];
  if (!KEY_ID_RE.test(keyId)) return refuse('malformed x-setu-key-id header');
  if (!TIMESTAMP_RE.test(tsText)) return refuse('malformed x-setu-timestamp header: expected milliseconds since the epoch');
  if (!NONCE_RE.test(nonce)) return refuse('malformed x-setu-nonce header: expected 16-128 base64url characters');
  if (!SIGNATURE_RE.test(sigText)) return refuse('malformed x-setu-signature header: expected 64 bytes in base64url');
  // Base64url of 64 bytes leaves 4 spare bits in the last character; insist on the one canonical spelling so
  // a signature has exactly one accepted form.
  const sig = Buffer.from(sigText, 'base64url');
  if (sig.length !== 64 || sig.toString('base64url') !== sigText) return refuse('malformed x-setu-signature header: not canonical base64url');
  const declared = optionalHeader(input.headers, HEADER_CONTENT_SHA256);
  if (typeof declared === 'object') return refuse(declared.error);
  if (declared !== undefined && !DIGEST_RE.test(declared)) return refuse(`malformed ${HEADER_CONTENT_SHA256} header: expected the body's SHA-256 in lower-case hex`);
  const chunk = optionalHeader(input.headers, HEADER_CHUNK_SHA256);
  if (typeof chunk === 'object') return refuse(chunk.error);
  if (chunk !== undefined) {
    if (declared !== undefined) return refuse(`a request declares its body's digest in ${HEADER_CONTENT_SHA256} or ${HEADER_CHUNK_SHA256}, not both`);
    if (!DIGEST_RE.test(chunk)) return refuse(`malformed ${HEADER_CHUNK_SHA256} header: expected the chunk's SHA-256 in lower-case hex`);
  }
  let digest = chunk ?? declared ?? EMPTY_BODY_SHA256;
  if (chunk !== undefined && input.body !== undefined && input.body !== null && bodySha256Hex(input.body) !== chunk) return refuse(`the body does not match its ${HEADER_CHUNK_SHA256} header`);
  if (chunk === undefined && input.body !== undefined && input.body !== null) {
    const actual = bodySha256Hex(input.body);
    if (declared !== undefined && actual !== declared) return refuse(`the body does not match its ${HEADER_CONTENT_SHA256} header`);
    digest = actual;
  }
  const ts = Number(tsText);
  if (Math.abs(input.now - ts) > maxSkew) {
    return refuse(`timestamp is ${Math.round((input.now - ts) / 1000)} s off the server clock (limit ${maxSkew / 1000} s)`);
  }
  if (typeof input.path !== 'string' || /[\r\n]/.test(input.path)) return refuse('request path holds a line break');
  const stored = await input.publicKeyFor(keyId);
  if (stored === null || stored === undefined) return refuse(`unknown or revoked key id ${JSON.stringify(keyId)}`);
  let ok: boolean;
  try {
    const key = typeof stored === 'string' ? cachedPublicKey(stored) : stored;
    const msg = canonicalRequestString(input.method, input.path, chunk !== undefined ? UNSIGNED_PAYLOAD + chunk : digest, ts, nonce);
    ok = verify(null, Buffer.from(msg, 'utf8'), key, sig);
  } catch {
    // A stored key that is not Ed25519 cannot have signed this; refuse rather than 500.
    ok = false;
  }
  if (!ok) return refuse('bad signature');
  if (await input.nonceSeen(keyId, nonce, ts)) return refuse('replayed nonce');
  return { ok: true, keyId, nonce, timestampMs: ts, bodySha256: digest, ...(chunk !== undefined ? { unsignedPayload: true as const } : {}) };
}
