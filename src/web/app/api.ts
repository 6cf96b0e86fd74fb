/**
 * The dashboard's only way to the coordinator: the public API, same origin. A user logs in with the key
 * file the CLI uses (an Ed25519 private key). The page imports it once as a non-extractable WebCrypto key
 * and forgets the file's text: every request is signed in the browser, in the format of
 * src/protocol/signing.ts, and neither the key nor the PEM is ever sent or stored. What survives a reload is
 * the CryptoKey object itself, kept in IndexedDB (which stores CryptoKeys as such: a script on the page can
 * sign with it, never read it). The live stream uses a short-lived stream token from POST
 * /v1/events/token because EventSource cannot send signed headers.
 */
import type { StreamEvent } from '../../protocol/views.js';

/** A signed-in user: the key id and a non-extractable Ed25519 signing key. */
export interface Credential {
  keyId: string;
  key: CryptoKey;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const b64url = (bytes: ArrayBuffer | Uint8Array) => {
  const u = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let s = '';
  for (const b of u) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
};
const hex = (buf: ArrayBuffer) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, '0')).join('');

function pemToDer(pem: string): Uint8Array<ArrayBuffer> {
  const m = /-----BEGIN PRIVATE KEY-----([\s\S]+?)-----END PRIVATE KEY-----/.exec(pem);
  if (!m) throw new Error('not a PKCS#8 private key (-----BEGIN PRIVATE KEY-----)');
  const bin = atob(m[1]!.replace(/\s+/g, ''));
  const der = new Uint8Array(new ArrayBuffer(bin.length));
  for (let i = 0; i < bin.length; i++) der[i] = bin.charCodeAt(i);
  return der;
}

/**
 * Reads what a user pastes or uploads: a key file, JSON `{keyId, privateKey}` as `setu` writes it, or a
 * bare PKCS#8 PEM with the key id typed beside it; imports the key as non-extractable.
 */
export async function importCredential(text: string, keyIdHint?: string): Promise<Credential> {
  const s = text.trim();
  if (!s) throw new Error('empty key file');
  let keyId: string | undefined = keyIdHint;
  let pem: string;
  if (s.startsWith('{')) {
    let j: Record<string, unknown>;
    try {
      j = JSON.parse(s) as Record<string, unknown>;
    } catch {
      throw new Error('the key file is not valid JSON');
    }
    if (typeof j['keyId'] === 'string') keyId = j['keyId'];
    if (typeof j['privateKey'] !== 'string') throw new Error('the key file has no privateKey (a PKCS#8 PEM)');
    pem = j['privateKey'];
  } else {
    pem = s;
  }
  if (!keyId) throw new Error('a bare private key needs its key id (user id)');
  // Non-extractable: page scripts can sign with it but never read it back.
  const key = await crypto.subtle.importKey('pkcs8', pemToDer(pem), { name: 'Ed25519' }, false, ['sign']);
  return { keyId, key };
}

export class Api {
  constructor(readonly credential: Credential) {}

  private async authHeaders(method: string, path: string, body: string | undefined): Promise<Record<string, string>> {
    const c = this.credential;
    // SETU-ED25519\n<METHOD>\n<path with query>\n<sha256 hex of body>\n<timestamp ms>\n<nonce> (src/protocol/signing.ts)
    const ts = Date.now();
    const nonce = b64url(crypto.getRandomValues(new Uint8Array(18)));
    const bodyHash = hex(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(body ?? '')));
    const msg = ['SETU-ED25519', method.toUpperCase(), path, bodyHash, String(ts), nonce].join('\n');
    const sig = await crypto.subtle.sign({ name: 'Ed25519' }, c.key, new TextEncoder().encode(msg));
    // The digest header lets the coordinator check the signature before it reads the body.
    return { 'x-setu-key-id': c.keyId, 'x-setu-timestamp': String(ts), 'x-setu-nonce': nonce, 'x-setu-signature': b64url(sig), 'x-setu-content-sha256': bodyHash };
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const text = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string> = { accept: 'application/json', ...(await this.authHeaders(method, path, text)) };
    if (text !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(path, { method, headers, ...(text !== undefined ? { body: text } : {}) });
    const raw = await res.text();
    let json: unknown;
    try {
      json = raw ? JSON.parse(raw) : undefined;
    } catch {
      json = undefined;
    }
    if (!res.ok) {
      const j = (json ?? {}) as { error?: string; message?: string };
      throw new ApiError(res.status, j.error ?? 'error', j.message ?? `HTTP ${res.status}`);
    }
    return json as T;
  }

  get<T>(path: string): Promise<T> {
    return this.request<T>('GET', path);
  }

  /** A signed GET of a file (a model, an export, a Markdown card): its bytes, type and suggested name. */
  async fetchFile(path: string): Promise<{ blob: Blob; type: string; filename: string | null }> {
    const res = await fetch(path, { headers: await this.authHeaders('GET', path, undefined) });
    if (!res.ok) {
      const j = (await res.json().catch(() => ({}))) as { error?: string; message?: string };
      throw new ApiError(res.status, j.error ?? 'error', j.message ?? `HTTP ${res.status}`);
    }
    const disposition = /filename="([^"]+)"/.exec(res.headers.get('content-disposition') ?? '')?.[1] ?? null;
    return { blob: await res.blob(), type: res.headers.get('content-type') ?? '', filename: disposition };
  }

  /** A stream token: also how login learns the caller's role (the call fails for a bad credential). */
  streamToken(): Promise<{ token: string; expiresAt: number; role: string }> {
    return this.request('POST', '/v1/events/token', {});
  }

  /**
   * Follows `GET /v1/events`, renewing the stream token when the stream ends or fails. Returns a function
   * that stops it. `onState` reports whether the stream is connected, for the page's live indicator.
   */
  follow(study: string | undefined, onEvent: (e: StreamEvent) => void, onState: (connected: boolean) => void): () => void {
    let stopped = false;
    let es: EventSource | undefined;
    let retry: ReturnType<typeof setTimeout> | undefined;
    const types = ['ready', 'round.opened', 'update.accepted', 'update.refused', 'round.committed', 'study.status', 'task.failed', 'expired', 'revoked'];
    const open = async () => {
      if (stopped) return;
      try {
        const { token } = await this.streamToken();
        if (stopped) return;
        const q = new URLSearchParams({ token, ...(study ? { study } : {}) });
        es = new EventSource(`/v1/events?${q}`);
        for (const t of types) es.addEventListener(t, (m) => onEvent(JSON.parse((m as MessageEvent<string>).data) as StreamEvent));
        es.addEventListener('open', () => onState(true));
        // Expired or dropped: EventSource would retry with the same (stale) token, so start over with a new one.
        const restart = () => {
          es?.close();
          onState(false);
          if (!stopped) retry = setTimeout(() => void open(), 1000);
        };
        es.addEventListener('expired', restart);
        es.addEventListener('error', restart);
        // Revoked (or the key rotated): a new token would be refused too, so stop here.
        es.addEventListener('revoked', () => {
          stopped = true;
          es?.close();
          onState(false);
        });
      } catch {
        onState(false);
        if (!stopped) retry = setTimeout(() => void open(), 5000);
      }
    };
    void open();
    return () => {
      stopped = true;
      clearTimeout(retry);
      es?.close();
    };
  }
}

// The session: the CryptoKey in IndexedDB under a random id that this tab keeps in sessionStorage, so a
// reload keeps the login and a new tab does not. The id is not a secret (it only names the record). Records
// of tabs closed without logging out are deleted after SESSION_MAX_AGE_MS, at the next login.
const TAB_KEY = 'setu.session';
const DB_NAME = 'setu';
const SESSIONS = 'sessions';
const SESSION_MAX_AGE_MS = 12 * 3600_000;

interface SessionRecord {
  id: string;
  keyId: string;
  key: CryptoKey;
  savedAt: number;
}

function sessions<T>(mode: IDBTransactionMode, fn: (s: IDBObjectStore) => IDBRequest<T> | void): Promise<T | undefined> {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open(DB_NAME, 1);
    open.onupgradeneeded = () => open.result.createObjectStore(SESSIONS, { keyPath: 'id' });
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const db = open.result;
      const tx = db.transaction(SESSIONS, mode);
      const req = fn(tx.objectStore(SESSIONS));
      tx.oncomplete = () => {
        db.close();
        resolve(req ? req.result : undefined);
      };
      tx.onerror = () => {
        db.close();
        reject(tx.error);
      };
    };
  });
}

/** This tab's signed-in user, if it logged in before a reload. */
export async function savedCredential(): Promise<Credential | undefined> {
  // Earlier versions kept the key file's text here; it must not outlive the upgrade.
  sessionStorage.removeItem('setu.credential');
  const id = sessionStorage.getItem(TAB_KEY);
  if (!id) return undefined;
  try {
    const r = (await sessions<SessionRecord>('readonly', (s) => s.get(id))) as SessionRecord | undefined;
    return r ? { keyId: r.keyId, key: r.key } : undefined;
  } catch {
    return undefined;
  }
}

/** Keeps (or, with undefined, forgets) this tab's signed-in user. */
export async function saveCredential(c: Credential | undefined): Promise<void> {
  const old = sessionStorage.getItem(TAB_KEY);
  if (old) await sessions('readwrite', (s) => void s.delete(old));
  sessionStorage.removeItem(TAB_KEY);
  if (!c) return;
  const id = b64url(crypto.getRandomValues(new Uint8Array(16)));
  const now = Date.now();
  await sessions('readwrite', (s) => {
    s.put({ id, keyId: c.keyId, key: c.key, savedAt: now } satisfies SessionRecord);
    const all = s.openCursor();
    all.onsuccess = () => {
      const cur = all.result;
      if (!cur) return;
      if ((cur.value as SessionRecord).savedAt < now - SESSION_MAX_AGE_MS) cur.delete();
      cur.continue();
    };
  });
  sessionStorage.setItem(TAB_KEY, id);
}
