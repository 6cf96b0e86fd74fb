/**
 * Who is calling, and may they do this. Every request after enrolment is signed with the caller's
 * Ed25519 key (src/protocol/signing.ts): sites register their public key when they enrol, users when they
 * accept their invite, and the bootstrap consortium admin's key is made by the coordinator on first start
 * (`<dataDir>/admin.key`). The coordinator refuses a bad signature, a timestamp more than 5 minutes off,
 * a replayed nonce (kept in the store, inserted atomically) and any revoked key, all with 401. A verified caller is
 * remembered for 30 s (`Authenticator`), its revocation still refused at the next request. Bearer
 * secrets are gone: a stolen database holds only public keys and digests of one-time invites.
 *
 * Authorisation is `authorize(principal, action)` over governance/roles.ts; routes then check the scope.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyRequest, onRequestAsyncHookHandler } from 'fastify';
import type { Store, SiteRow } from '../store/store.js';
import { DEFAULT_MAX_SKEW_MS, HEADER_CHUNK_SHA256, HEADER_CONTENT_SHA256, HEADER_KEY_ID, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, generateSigningKeys, importPrivateKey, publicKeyToRaw, verifyRequest } from '../protocol/signing.js';
import { createPublicKey } from 'node:crypto';
import { rolesFor, scopeOf, type Action, type Role, type Scope } from '../governance/roles.js';
import { appendAudit, type AuditKey } from '../governance/audit-store.js';
import { setBounded } from './bounded-map.js';

export type UserRole = Exclude<Role, 'site'>;

export type Principal =
  | { kind: 'site'; id: string; role: 'site'; site: SiteRow }
  | { kind: 'user'; id: string; role: UserRole; name: string; institution: string | null };

export const sha256hex = (s: string | Uint8Array) => createHash('sha256').update(s).digest('hex');
export const newSecret = (bytes = 32) => randomBytes(bytes).toString('base64url');

export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** A failed authentication; `identity` is set when the request named a registered key (for per-key rate limits). */
export class AuthError extends HttpError {
  constructor(
    code: 'unauthenticated' | 'revoked',
    message: string,
    readonly identity?: string,
  ) {
    super(401, code, message);
  }
}

// ---------------------------------------------------------------- key files

/** A signing identity on disk: JSON with the key id, the PKCS#8 PEM private key and the raw public key. */
export interface KeyFile {
  keyId: string;
  privateKey: string;
  publicKey: string;
  /** Where this identity is registered (informational; the CLI's --coordinator wins). */
  coordinator?: string;
}

export function writeKeyFile(file: string, k: KeyFile): void {
  const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(tmp, JSON.stringify(k, null, 2) + '\n', { mode: 0o600 });
  renameSync(tmp, file);
}

export function readKeyFile(file: string): KeyFile {
  let k: Partial<KeyFile>;
  try {
    k = JSON.parse(readFileSync(file, 'utf8')) as Partial<KeyFile>;
  } catch (e) {
    throw new Error(`cannot read key file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (typeof k.keyId !== 'string' || typeof k.privateKey !== 'string') throw new Error(`key file ${file} lacks keyId or privateKey`);
  const priv = importPrivateKey(k.privateKey);
  return { keyId: k.keyId, privateKey: k.privateKey, publicKey: publicKeyToRaw(createPublicKey(priv)), ...(k.coordinator ? { coordinator: k.coordinator } : {}) };
}

export const COORDINATOR_KEY_FILE = 'coordinator.key';

/** The coordinator's key file does not belong to the store it was started on (an operator's mistake to fix). */
export class CoordinatorKeyError extends Error {}
export const ADMIN_KEY_FILE = 'admin.key';
export const ADMIN_USER_ID = 'user-admin';

/**
 * The coordinator's own Ed25519 key (signs the audit chain), kept in `<dataDir>/coordinator.key`. Its public
 * half is pinned in the store on first use: a coordinator started with a different key file refuses to start,
 * so two coordinators sharing one PostgreSQL cannot sign one chain with two keys.
 */
export async function ensureCoordinatorKey(store: Store, dataDir: string): Promise<AuditKey> {
  const file = join(dataDir, COORDINATOR_KEY_FILE);
  const pinned = await store.getKv('coordinator_public_key');
  let pem: string;
  if (existsSync(file)) pem = readFileSync(file, 'utf8');
  else if (pinned) {
    // A second coordinator on a shared store must sign with the same key; making a new one would fork trust.
    throw new CoordinatorKeyError(`${file} is missing, and this store's audit chain is signed by ${pinned}: copy coordinator.key from the coordinator that made it`);
  } else {
    pem = generateSigningKeys().privateKeyPem;
    writeFileSync(file, pem, { mode: 0o600, flag: 'wx' });
  }
  const privateKey = importPrivateKey(pem);
  const publicKeyRaw = publicKeyToRaw(createPublicKey(privateKey));
  if (!pinned) await store.setKv('coordinator_public_key', publicKeyRaw);
  else if (pinned !== publicKeyRaw) {
    throw new CoordinatorKeyError(`${file} holds public key ${publicKeyRaw}, but this store's audit chain is signed by ${pinned}: copy the coordinator.key that belongs to this store`);
  }
  return { privateKey, publicKeyRaw };
}

/**
 * The bootstrap consortium admin: created on the first start of a store, its key written to
 * `<dataDir>/admin.key` (mode 600) before the user row commits, so the key is never lost. Later starts
 * return the file if this data directory has it (another coordinator sharing the store may not).
 */
export async function ensureBootstrapAdmin(store: Store, dataDir: string, audit: AuditKey, now: number): Promise<KeyFile | undefined> {
  const file = join(dataDir, ADMIN_KEY_FILE);
  if (await store.getUser(ADMIN_USER_ID)) return existsSync(file) ? readKeyFile(file) : undefined;
  const keys = generateSigningKeys();
  const kf: KeyFile = { keyId: ADMIN_USER_ID, privateKey: keys.privateKeyPem, publicKey: keys.publicKeyRaw };
  writeKeyFile(file, kf);
  try {
    await store.transaction(async (tx) => {
      await tx.createUser({ id: ADMIN_USER_ID, name: 'admin', role: 'consortium_admin', institution: null, public_key: keys.publicKeyRaw, status: 'active', created_by: 'coordinator', created_at: now });
      await appendAudit(tx, audit, { ts: now, actor: 'coordinator', kind: 'user.enrolled', subject: ADMIN_USER_ID, data: { name: 'admin', role: 'consortium_admin', publicKey: keys.publicKeyRaw, bootstrap: true } });
    });
  } catch (e) {
    // Another coordinator on the same store created the admin first: our key was never registered.
    rmSync(file, { force: true });
    if (await store.getUser(ADMIN_USER_ID)) return undefined;
    throw e;
  }
  return kf;
}

// ---------------------------------------------------------------- authentication

declare module 'fastify' {
  interface FastifyRequest {
    /** The exact body bytes as received (JSON bodies; binary bodies are the Buffer in `body`). */
    rawBody?: Buffer;
    /** The verified caller: set by `signatureHook` on every request in the authenticated scope. */
    principal?: Principal;
    /** The body digest the verified signature covers (plugins/signed-requests.ts checks the bytes against it). */
    signedBodySha256?: string;
    /**
     * The signature covers a declared chunk digest (x-setu-chunk-sha256, src/protocol/signing.ts) instead of a body
     * the plugin checks: only a route with `config.streamedBody` accepts it, and that route checks the bytes itself.
     */
    unsignedPayload?: boolean;
  }
}

export interface Authenticated {
  principal: Principal;
  /** The body digest the signature covers: the bytes read later must hash to it. */
  bodySha256: string;
  /** It was declared in x-setu-chunk-sha256 (the route, not the body parser, checks the bytes). */
  unsignedPayload?: boolean;
}

/** How long a verified caller (its row and key) is remembered between its requests. */
export const CALLER_CACHE_MS = 30_000;
const MAX_CALLERS = 100_000;

interface KnownCaller {
  principal: Principal;
  publicKey: string;
  at: number;
}

/** What the store says of a key id: its principal and key, or why it has none (`revoked`, else unknown). */
interface Lookup {
  principal?: Principal;
  publicKey?: string;
  revoked?: string;
  identity?: string;
}

/**
 * Checks a request's signature from its headers alone (method, path with query, the declared body digest,
 * timestamp, nonce), so it runs before a byte of the body is read; the caller then checks the body bytes
 * against `bodySha256`.
 */
export class Authenticator {
  private lastPrune = 0;
  /**
   * Callers verified in the last CALLER_CACHE_MS, by key id. A remembered caller costs one statement per request
   * instead of two (its row read, then its nonce recorded): the nonce is recorded by `rememberNonceIfActive`, which
   * inserts only while the key is still that caller's active one, so a revocation, suspension or key rotation made
   * by any coordinator on the store refuses the very next request (the nonce is still recorded in the store, exactly
   * once: replay protection is the store's, never this map's). `forget` drops an entry at once (identity.changed).
   */
  private readonly callers = new Map<string, KnownCaller>();
  constructor(
    private readonly store: Store,
    private readonly now: () => number,
    readonly maxSkewMs = DEFAULT_MAX_SKEW_MS,
    readonly callerCacheMs = CALLER_CACHE_MS,
  ) {}

  /** Forgets a caller (its identity changed: revoked, re-keyed, linked to an institution): its next request is looked up. */
  forget(id: string): void {
    this.callers.delete(id);
  }

  private async lookup(keyId: string): Promise<Lookup> {
    if (keyId.startsWith('site-')) {
      const site = await this.store.getSite(keyId);
      if (!site || !site.public_key) return {};
      if (site.status !== 'active') return { identity: site.id, revoked: `site ${site.name} is ${site.status}` };
      return { identity: site.id, publicKey: site.public_key, principal: { kind: 'site', id: site.id, role: 'site', site } };
    }
    const user = await this.store.getUser(keyId);
    if (!user || !user.public_key) return {};
    if (user.status !== 'active') return { identity: user.id, revoked: `user ${user.name} is ${user.status}` };
    return { identity: user.id, publicKey: user.public_key, principal: { kind: 'user', id: user.id, role: user.role as UserRole, name: user.name, institution: user.institution } };
  }

  async authenticate(req: FastifyRequest): Promise<Authenticated> {
    let found: Lookup = {};
    let known: KnownCaller | undefined;
    const now = this.now();
    const v = await verifyRequest({
      method: req.method,
      path: req.url,
      headers: req.headers,
      now,
      maxSkewMs: this.maxSkewMs,
      publicKeyFor: async (keyId) => {
        const k = this.callers.get(keyId);
        if (k && now >= k.at && now - k.at < this.callerCacheMs) {
          known = k;
          found = { principal: k.principal, publicKey: k.publicKey, identity: k.principal.id };
          return k.publicKey;
        }
        found = await this.lookup(keyId);
        return found.publicKey ?? null;
      },
      nonceSeen: async (keyId, nonce, ts) => {
        if (now - this.lastPrune > 60_000) {
          this.lastPrune = now;
          // Twice the window: a nonce is forgotten only once its timestamp would be refused anyway.
          await this.store.pruneNonces(now - 2 * this.maxSkewMs);
        }
        if (!known) return !(await this.store.rememberNonce(keyId, nonce, ts));
        if (await this.store.rememberNonceIfActive(keyId, nonce, ts, known.publicKey)) return false;
        // Not recorded: a replay, or the remembered key is no longer the caller's active one. Look again.
        this.callers.delete(keyId);
        found = await this.lookup(keyId);
        if (found.revoked) throw new AuthError('revoked', found.revoked, found.identity);
        if (found.publicKey !== known.publicKey) throw new AuthError('unauthenticated', `bad signature: key id ${JSON.stringify(keyId)} no longer has the key that signed this request`, found.identity);
        return true;
      },
    });
    if (!v.ok) {
      if (found.revoked) throw new AuthError('revoked', found.revoked, found.identity);
      throw new AuthError('unauthenticated', `${v.reason}; every request must be signed (x-setu-key-id, x-setu-timestamp, x-setu-nonce, x-setu-signature, and x-setu-content-sha256 when it has a body)`, found.identity);
    }
    const principal = found.principal!;
    if (!known) setBounded(this.callers, v.keyId, { principal, publicKey: found.publicKey!, at: now }, MAX_CALLERS);
    return { principal, bodySha256: v.bodySha256, ...(v.unsignedPayload ? { unsignedPayload: true } : {}) };
  }
}

/** Whether a request's framing announces a body (chunked, or a non-zero content-length). */
export function framesBody(req: FastifyRequest): boolean {
  const len = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (len !== undefined && len !== '0');
}

/**
 * The one authentication hook: server.ts adds it (`onRequest`) to the scope that holds every signed route, so
 * no route can forget it. It runs from the headers alone, before a byte of the body is read (the body limit
 * and the digest check that follow are plugins/signed-requests.ts); an unsigned request is refused at once.
 */
export function signatureHook(authenticator: Authenticator, onAuthenticated?: (p: Principal) => Promise<void>): onRequestAsyncHookHandler {
  return async (req) => {
    if (req.headers[HEADER_KEY_ID] === undefined && req.headers[HEADER_SIGNATURE] === undefined) {
      throw new AuthError('unauthenticated', `missing request signature: every request to this route must be signed (headers ${HEADER_KEY_ID}, ${HEADER_TIMESTAMP}, ${HEADER_NONCE}, ${HEADER_SIGNATURE}, and ${HEADER_CONTENT_SHA256} with a body; see src/protocol/signing.ts)`);
    }
    if (framesBody(req) && req.headers[HEADER_CONTENT_SHA256] === undefined && req.headers[HEADER_CHUNK_SHA256] === undefined) {
      throw new AuthError('unauthenticated', `a signed request with a body must declare the body's SHA-256 (hex) in ${HEADER_CONTENT_SHA256} (or, for an upload's chunk, in ${HEADER_CHUNK_SHA256})`);
    }
    const a = await authenticator.authenticate(req);
    req.principal = a.principal;
    req.signedBodySha256 = a.bodySha256;
    if (a.unsignedPayload) req.unsignedPayload = true;
    await onAuthenticated?.(a.principal);
  };
}

// ---------------------------------------------------------------- authorisation

/** Refuses (403) unless the caller's role may perform `action`; returns the scope the route must still check. */
export function authorize(p: Principal, action: Action): Scope {
  const scope = scopeOf(p.role, action);
  if (!scope) throw new HttpError(403, 'forbidden', `${p.kind === 'site' ? 'a site agent' : `role ${p.role}`} may not ${action} (allowed: ${rolesFor(action).join(', ') || 'nobody'})`);
  return scope;
}

export function requireSite(p: Principal, action: Action): SiteRow {
  authorize(p, action);
  if (p.kind !== 'site') throw new HttpError(403, 'forbidden', 'this endpoint is for site agents');
  return p.site;
}

export function requireUser(p: Principal, action: Action): Extract<Principal, { kind: 'user' }> & { scope: Scope } {
  if (p.kind !== 'user') throw new HttpError(403, 'forbidden', 'site agents cannot call operator endpoints');
  return { ...p, scope: authorize(p, action) };
}

/** A study lead acts on the studies they lead only ('own-study' scope in governance/roles.ts). */
export function checkOwnStudy(caller: { id: string; scope: Scope }, study: { id: string; created_by: string }): void {
  if (caller.scope === 'own-study' && study.created_by !== caller.id) throw new HttpError(403, 'forbidden', `study ${study.id} is led by someone else`);
}

