/**
 * A FHIR server's REST API as a source: searches each resource type the views read and follows the
 * Bundle's `next` links (paging), or runs the Bulk Data flow (kick-off `$export` with
 * `Prefer: respond-async`, poll the status URL as its `Retry-After` says, download the NDJSON files
 * the manifest lists). When the server asks for authorisation (401, or `auth` in the config), the
 * client authenticates with SMART Backend Services: a JWT client assertion signed with the site's
 * private key (RS384 or ES384, node:crypto), exchanged at the server's token endpoint for a bearer token.
 */
import { createPrivateKey, randomUUID, sign, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Issues } from '../facts.js';
import type { FhirFacts } from './facts.js';
import { readNdjson } from './files.js';

export interface SmartAuth {
  clientId: string;
  /** PEM private key (RSA for RS384, P-384 EC for ES384). */
  privateKeyFile: string;
  alg: 'RS384' | 'ES384';
  /** The key's id in the JWKS the site registered with the server. */
  kid?: string;
  scope?: string;
  /** Default: token_endpoint from <base>/.well-known/smart-configuration. */
  tokenUrl?: string;
}

export interface ServerSource {
  url: string;
  mode: 'search' | 'bulk';
  /** Search page size (_count). */
  pageSize?: number;
  auth?: SmartAuth;
  /** Gives up on a Bulk export after this long (default 10 minutes). */
  timeoutSeconds?: number;
}

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');

/** A signed client assertion, as SMART Backend Services (RFC 7523) asks. */
export function clientAssertion(a: SmartAuth, key: KeyObject, tokenUrl: string, now = Date.now()): string {
  const header = { alg: a.alg, typ: 'JWT', ...(a.kid ? { kid: a.kid } : {}) };
  const claims = { iss: a.clientId, sub: a.clientId, aud: tokenUrl, iat: Math.floor(now / 1000), exp: Math.floor(now / 1000) + 300, jti: randomUUID() };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const sig = sign('sha384', Buffer.from(input), a.alg === 'ES384' ? { key, dsaEncoding: 'ieee-p1363' } : key);
  return `${input}.${b64url(sig)}`;
}

export class FhirServerError extends Error {}

export class FhirClient {
  private token: { value: string; until: number } | undefined;
  private key: KeyObject | undefined;
  constructor(
    private readonly src: ServerSource,
    private readonly log: (m: string) => void = () => {},
  ) {}

  private base(): string {
    return this.src.url.replace(/\/+$/, '');
  }

  private async tokenUrl(): Promise<string> {
    if (this.src.auth?.tokenUrl) return this.src.auth.tokenUrl;
    const r = await fetch(`${this.base()}/.well-known/smart-configuration`, { headers: { accept: 'application/json' } });
    if (!r.ok) throw new FhirServerError(`${this.base()}/.well-known/smart-configuration answered ${r.status}; set auth.tokenUrl`);
    const c = (await r.json()) as { token_endpoint?: string };
    if (!c.token_endpoint) throw new FhirServerError(`${this.base()}'s SMART configuration names no token_endpoint`);
    return c.token_endpoint;
  }

  private async authorise(): Promise<string> {
    const a = this.src.auth;
    if (!a) throw new FhirServerError(`${this.base()} asks for authorisation (401); configure auth (SMART Backend Services) for this dataset`);
    if (this.token && this.token.until > Date.now() + 10_000) return this.token.value;
    this.key ??= createPrivateKey(readFileSync(a.privateKeyFile, 'utf8'));
    const url = await this.tokenUrl();
    const body = new URLSearchParams({
      grant_type: 'client_credentials',
      scope: a.scope ?? 'system/*.read',
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: clientAssertion(a, this.key, url),
    });
    const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' }, body });
    const j = (await r.json().catch(() => ({}))) as { access_token?: string; expires_in?: number; error?: string; error_description?: string };
    if (!r.ok || !j.access_token) throw new FhirServerError(`the token endpoint ${url} refused the client assertion: ${r.status} ${j.error ?? ''} ${j.error_description ?? ''}`.trim());
    this.token = { value: j.access_token, until: Date.now() + (j.expires_in ?? 300) * 1000 };
    this.log(`fhir: authorised at ${url} as ${a.clientId} (${j.expires_in ?? 300} s token)`);
    return j.access_token;
  }

  /** GET/DELETE with a bearer token once the server has asked for one (or auth is configured). */
  async request(url: string, init: { accept: string; headers?: Record<string, string>; method?: string } ): Promise<Response> {
    const go = async (auth: boolean) =>
      fetch(url, { method: init.method ?? 'GET', headers: { accept: init.accept, ...(init.headers ?? {}), ...(auth ? { authorization: `Bearer ${await this.authorise()}` } : {}) } });
    let r = await go(!!this.src.auth);
    if (r.status === 401) {
      this.token = undefined;
      r = await go(true);
    }
    return r;
  }

  private async json<T>(url: string): Promise<T> {
    const r = await this.request(url, { accept: 'application/fhir+json' });
    if (!r.ok) throw new FhirServerError(`GET ${url}: ${r.status} ${(await r.text()).slice(0, 300)}`);
    return (await r.json()) as T;
  }

  /** Every resource of `type`, page by page. */
  async search(type: string, out: FhirFacts): Promise<number> {
    let url: string | undefined = `${this.base()}/${type}?_count=${this.src.pageSize ?? 100}`;
    let pages = 0;
    while (url) {
      const b: { resourceType?: string; entry?: Array<{ resource?: unknown; search?: { mode?: string } }>; link?: Array<{ relation: string; url: string }> } = await this.json(url);
      if (b.resourceType !== 'Bundle') throw new FhirServerError(`GET ${url} returned ${b.resourceType}, not a searchset Bundle`);
      pages++;
      (b.entry ?? []).forEach((e, i) => {
        if (e.search?.mode && e.search.mode !== 'match') return;
        out.add(e.resource, `${url} entry ${i}`);
      });
      url = b.link?.find((l) => l.relation === 'next')?.url;
    }
    return pages;
  }

  /** The Bulk Data flow; NDJSON files are read as they download. */
  async bulkExport(types: string[], out: FhirFacts, issues: Issues): Promise<void> {
    const kick = `${this.base()}/$export?_type=${types.join(',')}`;
    const r = await this.request(kick, { accept: 'application/fhir+json', headers: { prefer: 'respond-async' } });
    if (r.status !== 202) throw new FhirServerError(`Bulk Data kick-off ${kick}: expected 202 Accepted, got ${r.status} ${(await r.text()).slice(0, 300)}`);
    const status = r.headers.get('content-location');
    if (!status) throw new FhirServerError(`Bulk Data kick-off ${kick}: 202 without Content-Location`);
    this.log(`fhir: bulk export started; polling ${status}`);
    const deadline = Date.now() + (this.src.timeoutSeconds ?? 600) * 1000;
    let manifest: { output?: Array<{ type: string; url: string }>; error?: Array<{ type: string; url: string }>; requiresAccessToken?: boolean } | undefined;
    while (!manifest) {
      const p = await this.request(status, { accept: 'application/json' });
      if (p.status === 200) manifest = (await p.json()) as typeof manifest;
      else if (p.status === 202) {
        if (Date.now() > deadline) throw new FhirServerError(`Bulk Data export at ${status} did not finish within ${this.src.timeoutSeconds ?? 600} s`);
        // The server says when to ask again; the protocol's own pacing (at most 60 s between polls).
        const ra = Number(p.headers.get('retry-after') ?? '1');
        const wait = Number.isFinite(ra) && ra >= 0 ? Math.min(60, ra) : 1;
        this.log(`fhir: bulk export ${p.headers.get('x-progress') ?? 'in progress'}; next poll in ${wait} s`);
        await p.body?.cancel();
        await new Promise((res) => setTimeout(res, wait * 1000));
      } else throw new FhirServerError(`Bulk Data status ${status}: ${p.status} ${(await p.text()).slice(0, 300)}`);
    }
    for (const e of manifest.error ?? []) issues.add('malformed-record', e.url, 'error', `the server reported an export error for ${e.type}`);
    for (const o of manifest.output ?? []) {
      const d = await this.request(o.url, { accept: 'application/fhir+ndjson' });
      if (!d.ok) throw new FhirServerError(`Bulk Data file ${o.url}: ${d.status}`);
      readNdjson(await d.text(), o.url, out, issues);
    }
    // Tell the server it may delete the files (the spec's DELETE on the status URL).
    await (await this.request(status, { accept: 'application/json', method: 'DELETE' })).body?.cancel();
  }
}
