/**
 * The dashboard's only way to the coordinator: the public API, same origin. A user logs in with the
 * credential the CLI uses: an operator token (sent as a bearer token) or a user key file (an Ed25519
 * private key; every request is then signed in the browser with WebCrypto, in the format of
 * src/protocol/signing.ts, and the key never leaves the page). The live stream uses a short-lived stream
 * token from POST /v1/events/token because EventSource cannot send credentials.
 */
import type { StreamEvent } from '../../protocol/views.js';

export type Credential =
  | { kind: 'token'; token: string }
  | { kind: 'key'; keyId: string; privateKeyPem: string };

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
 * Reads what a user pastes or uploads: an operator token (`adm_…` or any bearer token), or a key file.
 * Key files are JSON naming the key id (keyId, userId or id) and a PKCS#8 PEM (privateKeyPem or
 * privateKey); a bare PEM needs the key id typed beside it.
 */
export function parseCredential(text: string, keyIdHint?: string): Credential {
  const s = text.trim();
  if (!s) throw new Error('empty credential');
  if (s.startsWith('{')) {
    let j: Record<string, unknown>;
    try {
      j = JSON.parse(s) as Record<string, unknown>;
    } catch {
      throw new Error('the key file is not valid JSON');
    }
    const keyId = [j['keyId'], j['userId'], j['id']].find((v) => typeof v === 'string') as string | undefined;
    const pem = [j['privateKeyPem'], j['privateKey']].find((v) => typeof v === 'string' && v.includes('PRIVATE KEY')) as string | undefined;
    if (pem && (keyId || keyIdHint)) return { kind: 'key', keyId: (keyId ?? keyIdHint)!, privateKeyPem: pem };
    const token = [j['token'], j['credential']].find((v) => typeof v === 'string') as string | undefined;
    if (token) return { kind: 'token', token };
    throw new Error('the key file names no key id and private key (keyId/userId + privateKeyPem)');
  }
  if (s.includes('PRIVATE KEY')) {
    if (!keyIdHint) throw new Error('a bare private key needs its key id (user id)');
    return { kind: 'key', keyId: keyIdHint, privateKeyPem: s };
  }
  if (/\s/.test(s)) throw new Error('a token holds no spaces');
  return { kind: 'token', token: s };
}

export class Api {
  private keyPromise: Promise<CryptoKey> | undefined;

  constructor(readonly credential: Credential) {}

  private signingKey(): Promise<CryptoKey> {
    if (this.credential.kind !== 'key') throw new Error('no key');
    const pem = this.credential.privateKeyPem;
    // Non-extractable: once imported, page scripts can sign with it but not read it back.
    return (this.keyPromise ??= crypto.subtle.importKey('pkcs8', pemToDer(pem), { name: 'Ed25519' }, false, ['sign']));
  }

  private async authHeaders(method: string, path: string, body: string | undefined): Promise<Record<string, string>> {
    const c = this.credential;
    if (c.kind === 'token') return { authorization: `Bearer ${c.token}` };
    // SETU-ED25519\n<METHOD>\n<path with query>\n<sha256 hex of body>\n<timestamp ms>\n<nonce> (src/protocol/signing.ts)
    const ts = Date.now();
    const nonce = b64url(crypto.getRandomValues(new Uint8Array(18)));
    const bodyHash = hex(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(body ?? '')));
    const msg = ['SETU-ED25519', method.toUpperCase(), path, bodyHash, String(ts), nonce].join('\n');
    const sig = await crypto.subtle.sign({ name: 'Ed25519' }, await this.signingKey(), new TextEncoder().encode(msg));
    return { 'x-setu-key-id': c.keyId, 'x-setu-timestamp': String(ts), 'x-setu-nonce': nonce, 'x-setu-signature': b64url(sig) };
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
    const types = ['ready', 'round.opened', 'update.accepted', 'update.refused', 'round.committed', 'study.status', 'expired'];
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

const STORE_KEY = 'setu.credential';

/** The credential lives in sessionStorage: it survives a reload but not the closing of the tab. */
export function savedCredential(): Credential | undefined {
  try {
    const s = sessionStorage.getItem(STORE_KEY);
    return s ? (JSON.parse(s) as Credential) : undefined;
  } catch {
    return undefined;
  }
}
export function saveCredential(c: Credential | undefined): void {
  if (c) sessionStorage.setItem(STORE_KEY, JSON.stringify(c));
  else sessionStorage.removeItem(STORE_KEY);
}
