/**
 * The agent's (and the CLI's) only way out: HTTP(S) requests it initiates to the coordinator. Every request
 * is signed with the caller's Ed25519 key when a signer is given (src/protocol/signing.ts; a fresh timestamp
 * and nonce per attempt, so a retry is never a replay). An HTTPS coordinator with a private CA is trusted
 * through `ca` (the site config's caFile). Network failures, 5xx and 429 answers are retried with capped
 * exponential backoff and jitter, never sooner than the answer's Retry-After; other 4xx answers are final and
 * surface as ApiError with the coordinator's message.
 */
import http from 'node:http';
import https from 'node:https';
import { createHash, type KeyObject } from 'node:crypto';
import { closeSync, createReadStream, existsSync, fsyncSync, openSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { bodySha256Hex, signChunkRequest, signRequest } from '../protocol/signing.js';
import { AGENT_MAX_RETRY_DELAY_MS } from '../protocol/api.js';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** The answer's JSON body, when it had one (a 409 of a chunked upload carries `received`). */
    readonly body?: Record<string, unknown>,
  ) {
    super(message);
  }
}

/** The coordinator's TLS certificate is not trusted by this client: retrying will not fix it. */
export class TlsTrustError extends Error {
  constructor(
    readonly url: string,
    readonly code: string,
    detail: string,
  ) {
    super(`TLS: ${detail} (${code}): the certificate of ${url} is not trusted; trust its CA with caFile in site.yaml (agents), --ca-file or SETU_CA_FILE (commands), or NODE_EXTRA_CA_CERTS`);
  }
}

/**
 * The client gave up (giveUpAfterMs): the coordinator could not be reached, or kept answering 5xx. `status` is the
 * last HTTP status when it answered; `message` then carries its own words (and request id, if it sent one).
 */
export class CoordinatorUnavailable extends Error {
  constructor(
    readonly url: string,
    readonly reason: string,
    readonly status?: number,
  ) {
    super(status ? `the coordinator at ${url} failed: ${reason}` : `coordinator unreachable at ${url}: ${reason}`);
  }
}

export interface Signer {
  keyId: string;
  privateKey: KeyObject | string;
}

export interface HttpClientOptions {
  baseUrl: string;
  /** Sign every request with this identity (sites after enrolment, users, the admin). */
  signer?: Signer;
  /** Extra CA certificate(s), PEM, trusted for an HTTPS coordinator. */
  ca?: string | Buffer;
  /** Called before each retry (for logs). */
  onRetry?: (attempt: number, delayMs: number, reason: string) => void;
  maxDelayMs?: number;
  /** Give up after this long without success (default: never). */
  giveUpAfterMs?: number;
  /**
   * Treat 500 and 501 as final, like a 4xx (operator commands: a coordinator bug will not heal in seconds, and the
   * person at the terminal should read its message now). 502–504 (a proxy, an overload) are still retried.
   */
  finalServerErrors?: boolean;
  signal?: AbortSignal;
}

export interface RequestOptions {
  /**
   * Sign the body UNSIGNED-PAYLOAD style: over its SHA-256 declared in x-setu-chunk-sha256 (src/protocol/signing.ts),
   * which only an upload's chunk route accepts; the coordinator hashes the bytes once as it writes them.
   */
  unsignedPayload?: boolean;
}

export interface Resp {
  status: number;
  headers: Headers;
  body: Uint8Array;
  json<T>(): T;
}

function send(url: URL, method: string, headers: Record<string, string>, body: Uint8Array | undefined, signal: AbortSignal, ca: string | Buffer | undefined): Promise<{ status: number; headers: Headers; body: Uint8Array }> {
  return new Promise((resolve, reject) => {
    const opts: https.RequestOptions = { method, headers, signal };
    const req = url.protocol === 'https:' ? https.request(url, { ...opts, ...(ca ? { ca } : {}) }) : http.request(url, opts);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const h = new Headers();
        for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) h.set(k, Array.isArray(v) ? v.join(', ') : v);
        resolve({ status: res.statusCode ?? 0, headers: h, body: new Uint8Array(Buffer.concat(chunks)) });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** The coordinator's own words in a 5xx answer (its JSON message and request id), for the person reading the error. */
function serverMessage(r: Resp): string {
  try {
    const j = r.json<{ error?: string; message?: string; requestId?: string }>();
    const id = j.requestId ?? r.headers.get('x-request-id');
    return j.message ? `: ${j.message}${id ? ` (request id ${id})` : ''}` : '';
  } catch {
    return '';
  }
}

/** The longest Retry-After honoured, ms: a coordinator asking for more is waited on this long, then asked again. */
export const MAX_RETRY_AFTER_MS = 5 * 60_000;

/** A Retry-After header in ms (delta-seconds or an HTTP date), or undefined when absent or unreadable. */
export function retryAfterOf(h: Headers, now = Date.now()): number | undefined {
  const v = h.get('retry-after')?.trim();
  if (!v) return undefined;
  if (/^\d+$/.test(v)) return Math.min(Number(v) * 1000, MAX_RETRY_AFTER_MS);
  const at = Date.parse(v);
  return Number.isFinite(at) ? Math.min(Math.max(0, at - now), MAX_RETRY_AFTER_MS) : undefined;
}

/**
 * How long to wait before retry `attempt` (0-based): exponential backoff from 250 ms up to `maxDelayMs`, with
 * jitter so that many agents refused together do not come back together, and never less than the Retry-After
 * the coordinator sent (jittered upwards, by up to half of it, for the same reason).
 */
export function retryDelayMs(attempt: number, maxDelayMs: number, retryAfterMs?: number, random: () => number = Math.random): number {
  const backoff = Math.min(maxDelayMs, 250 * 2 ** Math.min(attempt, 10)) * (0.5 + random() / 2);
  if (retryAfterMs === undefined) return backoff;
  return Math.max(backoff, retryAfterMs * (1 + random() / 2));
}

export class HttpClient {
  constructor(private readonly o: HttpClientOptions) {}

  withSigner(signer: Signer): HttpClient {
    return new HttpClient({ ...this.o, signer });
  }

  async request(method: string, path: string, body?: { type: string; data: Uint8Array | string }, timeoutMs = 60_000, ro: RequestOptions = {}): Promise<Resp> {
    const started = Date.now();
    const url = new URL(path, this.o.baseUrl);
    const data = body === undefined ? undefined : typeof body.data === 'string' ? new TextEncoder().encode(body.data) : body.data;
    // A chunk's digest once per request, not once per attempt (each retry is signed afresh: new timestamp and nonce).
    const chunkSha256 = ro.unsignedPayload && this.o.signer ? bodySha256Hex(data) : undefined;
    let lastStatus: number | undefined;
    let retryAfterMs: number | undefined;
    for (let attempt = 0; ; attempt++) {
      if (this.o.signal?.aborted) throw new Error('aborted');
      let reason: string;
      try {
        const headers: Record<string, string> = {};
        if (body) headers['content-type'] = body.type;
        if (data) headers['content-length'] = String(data.byteLength);
        // The signed path is the request line's exactly: pathname plus query as sent.
        if (this.o.signer) {
          const signing = { method, path: url.pathname + url.search, keyId: this.o.signer.keyId, privateKey: this.o.signer.privateKey };
          Object.assign(headers, chunkSha256 !== undefined ? signChunkRequest({ ...signing, chunkSha256 }) : signRequest({ ...signing, body: data }));
        }
        const signals = [AbortSignal.timeout(timeoutMs), ...(this.o.signal ? [this.o.signal] : [])];
        const res = await send(url, method, headers, data, AbortSignal.any(signals), this.o.ca);
        const buf = res.body;
        const resp: Resp = { status: res.status, headers: res.headers, body: buf, json: <T>() => JSON.parse(new TextDecoder().decode(buf)) as T };
        // 429 (this caller holds too much: too many long-polls or uploads open, too many failed authentications) is
        // retried like a 5xx, after at least the Retry-After the coordinator asked for (retryDelayMs).
        if (res.status < 500 && res.status !== 429) {
          if (res.status >= 400) {
            let code = 'error',
              message = `HTTP ${res.status}`,
              answer: Record<string, unknown> | undefined;
            try {
              const j = resp.json<{ error?: string; message?: string }>();
              code = j.error ?? code;
              message = j.message ?? message;
              answer = j;
            } catch {
              /* not JSON */
            }
            throw new ApiError(res.status, code, message, answer);
          }
          return resp;
        }
        reason = `HTTP ${res.status}${serverMessage(resp)}`;
        lastStatus = res.status;
        retryAfterMs = retryAfterOf(res.headers);
        if (this.o.finalServerErrors && res.status <= 501) throw new CoordinatorUnavailable(this.o.baseUrl, reason, res.status);
      } catch (e) {
        if (e instanceof ApiError || e instanceof CoordinatorUnavailable) throw e;
        if (this.o.signal?.aborted) throw e;
        const err = e as NodeJS.ErrnoException;
        // A certificate the client does not trust will not fix itself: fail now, naming the cause.
        if (typeof err.code === 'string' && /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/.test(err.code)) throw new TlsTrustError(this.o.baseUrl, err.code, err.message);
        reason = err.cause ? String((err.cause as Error).message ?? err.cause) : err.code === 'ECONNREFUSED' ? `connection refused (${err.message})` : err.message;
        lastStatus = undefined;
        retryAfterMs = undefined;
      }
      if (this.o.giveUpAfterMs !== undefined && Date.now() - started > this.o.giveUpAfterMs) throw new CoordinatorUnavailable(this.o.baseUrl, reason, lastStatus);
      const delay = retryDelayMs(attempt, this.o.maxDelayMs ?? AGENT_MAX_RETRY_DELAY_MS, retryAfterMs);
      this.o.onRetry?.(attempt + 1, delay, reason);
      await new Promise((r) => setTimeout(r, delay));
    }
  }

  async json<T>(method: string, path: string, payload?: unknown, timeoutMs?: number): Promise<T> {
    const r = await this.request(method, path, payload === undefined ? undefined : { type: 'application/json', data: JSON.stringify(payload) }, timeoutMs);
    return r.json<T>();
  }

  /**
   * Downloads `path` into `file`, resuming after a dropped connection or a restart of either side: the bytes
   * so far are kept in `<file>.part` and the rest asked for with `Range: bytes=<have>-`. The whole file must hash
   * to the answer's `x-setu-digest` (sha256), else it is removed and the download refused. Returns the digest and
   * the last answer's headers.
   */
  async download(path: string, file: string, timeoutMs = 60_000): Promise<{ digest: string; headers: Record<string, string> }> {
    const part = `${file}.part`;
    const url = new URL(path, this.o.baseUrl);
    for (let attempt = 0; ; attempt++) {
      if (this.o.signal?.aborted) throw new Error('aborted');
      const have = existsSync(part) ? statSync(part).size : 0;
      let reason: string;
      try {
        const headers: Record<string, string> = have > 0 ? { range: `bytes=${have}-` } : {};
        if (this.o.signer) Object.assign(headers, signRequest({ method: 'GET', path: url.pathname + url.search, body: undefined, keyId: this.o.signer.keyId, privateKey: this.o.signer.privateKey }));
        const signal = AbortSignal.any([AbortSignal.timeout(timeoutMs), ...(this.o.signal ? [this.o.signal] : [])]);
        const got = await receiveToFile(url, headers, part, have, signal, this.o.ca);
        if (got.status === 200 || got.status === 206) {
          const digest = got.digest;
          const actual = await sha256File(part);
          if (digest && actual !== digest) {
            rmSync(part, { force: true });
            throw new ApiError(502, 'digest_mismatch', `the download of ${path} hashes to sha256 ${actual}, not the announced ${digest}`);
          }
          renameSync(part, file);
          return { digest: actual, headers: got.headers };
        }
        if (got.status === 416) {
          rmSync(part, { force: true }); // what we hold is not a prefix of this file: start over
          reason = 'HTTP 416';
        } else if (got.status < 500 && got.status !== 429) {
          throw new ApiError(got.status, got.error?.error ?? 'error', got.error?.message ?? `HTTP ${got.status}`, got.error);
        } else reason = `HTTP ${got.status}`;
      } catch (e) {
        if (e instanceof ApiError || this.o.signal?.aborted) throw e;
        reason = (e as Error).message;
      }
      const delay = retryDelayMs(attempt, this.o.maxDelayMs ?? AGENT_MAX_RETRY_DELAY_MS);
      this.o.onRetry?.(attempt + 1, delay, `download of ${path}: ${reason}`);
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

/** One GET whose 200/206 body is written to `part` (appended from `have` for a 206), fsynced; errors as JSON. */
function receiveToFile(url: URL, headers: Record<string, string>, part: string, have: number, signal: AbortSignal, ca: string | Buffer | undefined): Promise<{ status: number; headers: Record<string, string>; digest?: string; error?: Record<string, unknown> & { error?: string; message?: string } }> {
  return new Promise((resolve, reject) => {
    const opts: https.RequestOptions = { method: 'GET', headers, signal };
    const req = url.protocol === 'https:' ? https.request(url, { ...opts, ...(ca ? { ca } : {}) }) : http.request(url, opts);
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      const digest = typeof res.headers['x-setu-digest'] === 'string' ? res.headers['x-setu-digest'] : undefined;
      const answered = Object.fromEntries(Object.entries(res.headers).flatMap(([k, v]) => (typeof v === 'string' ? [[k, v]] : [])));
      if (status !== 200 && status !== 206) {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          let error;
          try {
            error = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          } catch {
            /* not JSON */
          }
          resolve({ status, headers: answered, ...(digest ? { digest } : {}), ...(error ? { error } : {}) });
        });
        return;
      }
      // A 200 is the whole file (the server ignored the range, or there was none): start the part afresh.
      const fd = openSync(part, status === 206 && have > 0 ? 'a' : 'w', 0o600);
      let failed = false;
      res.on('data', (c: Buffer) => {
        try {
          writeSync(fd, c);
        } catch (e) {
          failed = true;
          res.destroy(e as Error);
        }
      });
      let closed = false;
      const done = (e?: Error) => {
        if (closed) return;
        closed = true;
        try {
          fsyncSync(fd);
        } finally {
          closeSync(fd);
        }
        if (e || failed) reject(e ?? new Error('write failed'));
        else resolve({ status, headers: answered, ...(digest ? { digest } : {}) });
      };
      res.on('error', done);
      res.on('aborted', () => done(new Error('the connection closed mid-download')));
      res.on('end', () => (res.complete ? done() : done(new Error('the connection closed mid-download'))));
    });
    req.on('error', reject);
    req.end();
  });
}

async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(file)) h.update(c as Buffer);
  return h.digest('hex');
}
