/**
 * Every route declares its schemas, so `/openapi.json` describes the whole API: its path parameters (when its URL
 * has any, naming each), its query string (a route that reads none declares an empty one and refuses any), its
 * body (a POST, PUT or PATCH; one that takes none declares so), and a response schema for a success status. The
 * test reads what each route gave Fastify (the route table) and what the document then says, so a route added
 * without them fails here. The schemas document replies that are written with JSON.stringify (plugins/replies.ts):
 * a reply is never cut down to its schema, and under test one that does not match its schema answers 500.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Type } from '@sinclair/typebox';
import Fastify from 'fastify';
import { startCoordinator, type RunningCoordinator } from './start.js';
import { createLogger } from '../observability/logger.js';
import { enrolUser, inject, type Identity } from '../testing/inject.js';
import { replySerialization } from './plugins/replies.js';
import { API_PATH } from '../testing/fuzz.js';

const isApi = (url: string) => API_PATH.test(url);

type Schema = { properties?: Record<string, unknown>; content?: Record<string, unknown> };

describe('every route declares its schemas', () => {
  let c: RunningCoordinator;
  let dir: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'setu-openapi-'));
    c = await startCoordinator({ dataDir: dir, port: 0, logger: createLogger({ level: 'silent' }) });
  });
  after(async () => {
    await c?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('each API route names its params, query string, body and a 2xx response schema', () => {
    const routes = c.app.routeTable.filter((r) => isApi(r.url));
    assert.ok(routes.length > 50, `only ${routes.length} API routes found`);
    const lacking: string[] = [];
    for (const r of routes) {
      const s = (r.schema ?? {}) as Record<string, Schema | undefined>;
      const at = `${r.method} ${r.url}`;
      const params = [...r.url.matchAll(/:([A-Za-z_]+)/g)].map((m) => m[1]!);
      if (params.length && !s.params) lacking.push(`${at}: no params schema`);
      for (const p of params) if (s.params && !s.params.properties?.[p]) lacking.push(`${at}: its params schema lacks :${p}`);
      if (!s.querystring) lacking.push(`${at}: no querystring schema (declare NoQuery when it reads none)`);
      if (['POST', 'PUT', 'PATCH'].includes(r.method) && !s.body) lacking.push(`${at}: no body schema (declare NoBody when it takes none)`);
      if (!Object.keys((s.response ?? {}) as object).some((code) => /^2/.test(code))) lacking.push(`${at}: no response schema for a 2xx status`);
    }
    assert.deepEqual(lacking, []);
  });

  it('/openapi.json documents each operation\'s request body and 2xx answer', async () => {
    const doc = (await inject(c.app, 'GET', '/openapi.json')).json as { paths: Record<string, Record<string, { requestBody?: { content?: Record<string, unknown> }; responses?: Record<string, { content?: unknown }> }>> };
    const lacking: string[] = [];
    let operations = 0;
    for (const [path, ops] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        operations++;
        if (['post', 'put', 'patch'].includes(method) && !Object.keys(op.requestBody?.content ?? {}).length) lacking.push(`${method.toUpperCase()} ${path}: no request body`);
        if (!Object.entries(op.responses ?? {}).some(([code, r]) => code.startsWith('2') && (r.content || code === '204'))) lacking.push(`${method.toUpperCase()} ${path}: no 2xx response schema`);
      }
    }
    assert.ok(operations > 50, `only ${operations} operations documented`);
    assert.deepEqual(lacking, []);
    // What Fastify's schemas cannot say alone (routes/web.ts documentBodies): a raw body is binary, an optional one not required.
    const weights = doc.paths['/v1/studies/{id}/initial-weights']!['put']!.requestBody as { content: Record<string, { schema: { type: string; format: string } }> };
    assert.deepEqual([weights.content['application/octet-stream']!.schema.type, weights.content['application/octet-stream']!.schema.format], ['string', 'binary']);
    assert.equal((doc.paths['/v1/studies/{id}/start']!['post']!.requestBody as { required: boolean }).required, false);
    assert.equal((doc.paths['/v1/users']!['post']!.requestBody as { required: boolean }).required, true);
  });

  it('a route that reads no query string refuses one, naming it', async () => {
    const admin: Identity = { keyId: c.adminKey!.keyId, privateKey: c.adminKey!.privateKey };
    const lead = await enrolUser(c.app, admin, 'lead-openapi', 'study_lead');
    assert.equal((await inject(c.app, 'GET', '/v1/studies', { as: lead })).status, 200);
    const r = await inject(c.app, 'GET', '/v1/studies?page=2', { as: lead });
    assert.equal(r.status, 400, r.body);
    assert.match(r.json.message, /querystring/);
  });
});

describe('replies are written whole and checked against their schema', () => {
  const build = async (strict: boolean) => {
    const lines: string[] = [];
    const app = Fastify({ loggerInstance: createLogger({ level: 'error', destination: { write: (s: string) => void lines.push(s) } }) as never });
    replySerialization(app as never, { strict });
    const Reply = Type.Object({ id: Type.String(), n: Type.Integer() }, { additionalProperties: true });
    app.get('/whole', { schema: { response: { 200: Reply } } }, async () => ({ id: 'a', n: 1, added: { deep: [1, 2] } }));
    app.get('/wrong', { schema: { response: { 200: Reply } } }, async () => ({ id: 'a', n: 1.5 }));
    await app.ready();
    return { app, lines };
  };

  it('a field the schema does not name still reaches the client', async () => {
    const { app } = await build(true);
    const r = await app.inject('/whole');
    assert.equal(r.statusCode, 200);
    assert.deepEqual(JSON.parse(r.body), { id: 'a', n: 1, added: { deep: [1, 2] } });
    await app.close();
  });

  it('a reply that contradicts its schema answers 500 when strict, and is logged and sent unchanged otherwise', async () => {
    const strict = await build(true);
    const r = await strict.app.inject('/wrong');
    assert.equal(r.statusCode, 500);
    await strict.app.close();
    const lax = await build(false);
    const l = await lax.app.inject('/wrong');
    assert.equal(l.statusCode, 200);
    assert.deepEqual(JSON.parse(l.body), { id: 'a', n: 1.5 }, 'sent as the route made it, not coerced to an integer');
    assert.ok(lax.lines.some((x) => /does not match its schema: \/n/.test(x)), lax.lines.join('\n'));
    await lax.app.close();
  });
});
