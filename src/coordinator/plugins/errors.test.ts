/**
 * The error mapping on its own, on a bare Fastify app with the coordinator's error plugin: each kind of
 * failure gets its status and the `{error, message}` shape; 5xx answers carry the request id and are logged
 * with it; the store's transient fault is a 503 with Retry-After.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import Fastify, { type FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import { StoreConflict, StoreUnavailable } from '../../store/store.js';
import { AuthError, HttpError } from '../auth.js';
import { createLogger } from '../../observability/logger.js';
import { AuthFailureLimiter } from './auth-limit.js';
import { STORE_RETRY_AFTER_S, errorHandling } from './errors.js';

test('every failure answers {error, message}; 5xx add the request id the log line carries', async () => {
  const lines: string[] = [];
  const app = Fastify({ loggerInstance: createLogger({ level: 'info', destination: { write: (s: string) => void lines.push(s) } }) }) as unknown as FastifyInstance;
  errorHandling(app, { limiter: new AuthFailureLimiter() });
  app.get('/unavailable', async () => {
    throw new StoreUnavailable('connection terminated');
  });
  app.get('/conflict', async () => {
    throw new StoreConflict('study s1 changed under you');
  });
  app.get('/http', async () => {
    throw new HttpError(403, 'forbidden', 'role auditor may not start studies');
  });
  app.get('/auth', async () => {
    throw new AuthError('revoked', 'user u1 is revoked');
  });
  app.get('/bug', async () => {
    throw new TypeError("Cannot read properties of undefined (reading 'x')");
  });
  app.post('/schema', { schema: { body: Type.Object({ n: Type.Integer() }) } }, async () => ({ ok: true }));

  const get = async (url: string, method: 'GET' | 'POST' = 'GET', payload?: unknown) => {
    const r = await app.inject({ method, url, ...(payload !== undefined ? { payload: payload as object } : {}) });
    return { status: r.statusCode, json: JSON.parse(r.body) as Record<string, string>, headers: r.headers };
  };

  const u = await get('/unavailable');
  assert.equal(u.status, 503);
  assert.equal(u.headers['retry-after'], String(STORE_RETRY_AFTER_S));
  assert.equal(u.json['error'], 'store_unavailable');
  assert.match(u.json['message']!, /the coordinator's store cannot answer now \(connection terminated\); retry in 5 s/);
  assert.ok(u.json['requestId']);

  const bug = await get('/bug');
  assert.equal(bug.status, 500);
  assert.deepEqual(Object.keys(bug.json).sort(), ['error', 'message', 'requestId']);
  assert.doesNotMatch(bug.json['message']!, /Cannot read/, 'the cause is logged, not sent');

  assert.deepEqual(await get('/conflict').then((r) => [r.status, r.json]), [409, { error: 'conflict', message: 'study s1 changed under you' }]);
  assert.deepEqual(await get('/http').then((r) => [r.status, r.json]), [403, { error: 'forbidden', message: 'role auditor may not start studies' }]);
  assert.deepEqual(await get('/auth').then((r) => [r.status, r.json]), [401, { error: 'revoked', message: 'user u1 is revoked' }]);
  const bad = await get('/schema', 'POST', { n: 'x' });
  assert.equal(bad.status, 400);
  assert.equal(bad.json['error'], 'invalid_request');
  assert.match(bad.json['message']!, /n must be integer/);
  const nf = await get('/nowhere');
  assert.deepEqual([nf.status, nf.json['error']], [404, 'not_found']);
  assert.match(nf.json['message']!, /no route GET \/nowhere; the API is described at \/openapi.json/);

  // Both 5xx are logged at error level with their request ids and the error itself.
  const errors = lines.map((l) => JSON.parse(l) as Record<string, any>).filter((l) => l['level'] === 50);
  for (const r of [u, bug]) {
    const line = errors.find((l) => l['reqId'] === r.json['requestId']);
    assert.ok(line?.['err']?.message, `logged under ${r.json['requestId']}`);
  }
});
