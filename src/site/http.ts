/**
 * The agent's only way out: HTTP(S) requests it initiates to the coordinator. Network failures and
 * 5xx answers are retried with capped exponential backoff and jitter; 4xx answers are final and
 * surface as ApiError with the coordinator's message.
 */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export interface HttpClientOptions {
  baseUrl: string;
  credential?: string;
  /** Called before each retry (for logs). */
  onRetry?: (attempt: number, delayMs: number, reason: string) => void;
  maxDelayMs?: number;
  /** Give up after this long without success (default: never). */
  giveUpAfterMs?: number;
  signal?: AbortSignal;
}

export interface Resp {
  status: number;
  headers: Headers;
  body: Uint8Array;
  json<T>(): T;
}

export class HttpClient {
  constructor(private readonly o: HttpClientOptions) {}

  withCredential(credential: string): HttpClient {
    return new HttpClient({ ...this.o, credential });
  }

  async request(method: string, path: string, body?: { type: string; data: Uint8Array | string }, timeoutMs = 60_000): Promise<Resp> {
    const started = Date.now();
    for (let attempt = 0; ; attempt++) {
      if (this.o.signal?.aborted) throw new Error('aborted');
      let reason: string;
      try {
        const headers: Record<string, string> = {};
        if (this.o.credential) headers['authorization'] = `Bearer ${this.o.credential}`;
        if (body) headers['content-type'] = body.type;
        const signals = [AbortSignal.timeout(timeoutMs), ...(this.o.signal ? [this.o.signal] : [])];
        const res = await fetch(new URL(path, this.o.baseUrl), { method, headers, body: body?.data as RequestInit["body"], signal: AbortSignal.any(signals) });
        const buf = new Uint8Array(await res.arrayBuffer());
        const resp: Resp = { status: res.status, headers: res.headers, body: buf, json: <T>() => JSON.parse(new TextDecoder().decode(buf)) as T };
        if (res.status < 500) {
          if (res.status >= 400) {
            let code = 'error', message = `HTTP ${res.status}`;
            try {
              const j = resp.json<{ error?: string; message?: string }>();
              code = j.error ?? code;
              message = j.message ?? message;
            } catch {
              /* not JSON */
            }
            throw new ApiError(res.status, code, message);
          }
          return resp;
        }
        reason = `HTTP ${res.status}`;
      } catch (e) {
        if (e instanceof ApiError) throw e;
        if (this.o.signal?.aborted) throw e;
        reason = (e as Error).cause ? String(((e as Error).cause as Error).message ?? (e as Error).cause) : (e as Error).message;
      }
      if (this.o.giveUpAfterMs !== undefined && Date.now() - started > this.o.giveUpAfterMs) throw new Error(`coordinator unreachable: ${reason}`);
      const delay = Math.min(this.o.maxDelayMs ?? 15_000, 250 * 2 ** Math.min(attempt, 10)) * (0.5 + Math.random() / 2);
      this.o.onRetry?.(attempt + 1, delay, reason);
      await new Promise((r) => setTimeout(r, delay));
    }
  }

  async json<T>(method: string, path: string, payload?: unknown, timeoutMs?: number): Promise<T> {
    const r = await this.request(method, path, payload === undefined ? undefined : { type: 'application/json', data: JSON.stringify(payload) }, timeoutMs);
    return r.json<T>();
  }
}
