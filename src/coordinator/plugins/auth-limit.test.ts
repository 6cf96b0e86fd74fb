/**
 * Failed authentication is limited per address and per registered key; successful traffic is never
 * slowed: past the limit failures answer 429 with Retry-After, while correctly signed requests from the same
 * address and under the same key id keep answering 200.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCoordinator, type RunningCoordinator } from '../start.js';
import { createLogger } from '../../observability/logger.js';
import { generateSigningKeys, signRequest } from '../../protocol/signing.js';
import { enrolUser, inject, type Identity } from '../../testing/inject.js';
import { AuthFailureLimiter } from './auth-limit.js';

describe('the failure counter', () => {
  it('counts failures in fixed windows per address and per identity, bounded in size', () => {
    let t = 0;
    const l = new AuthFailureLimiter({ perAddress: 3, perIdentity: 2, windowMs: 10_000, now: () => t });
    assert.equal(l.fail('a'), undefined);
    assert.equal(l.fail('a', 'user-1'), undefined);
    assert.equal(l.fail('b', 'user-1'), undefined);
    assert.deepEqual(l.fail('c', 'user-1'), { retryAfterS: 10, limit: 'key' }, 'a third failure for the key, from anywhere');
    assert.equal(l.fail('a'), undefined);
    t = 4_000;
    assert.deepEqual(l.fail('a'), { retryAfterS: 6, limit: 'address' });
    t = 10_000;
    assert.equal(l.fail('a'), undefined, 'a new window');
    for (let i = 0; i < 20_000; i++) l.fail(`addr-${i}`);
    assert.ok((l as unknown as { windows: Map<string, unknown> }).windows.size <= 10_000, 'bounded');
  });
});

describe('failed-authentication limits over HTTP', () => {
  let c: RunningCoordinator;
  let dir: string;
  let admin: Identity, lead: Identity;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'setu-limit-'));
    c = await startCoordinator({ dataDir: dir, port: 0, logger: createLogger({ level: 'silent' }), server: { authLimits: { perAddress: 8, perIdentity: 4, windowMs: 60_000 } } });
    admin = { keyId: c.adminKey!.keyId, privateKey: c.adminKey!.privateKey };
    lead = await enrolUser(c.app, admin, 'lead-limit', 'study_lead');
  });
  after(async () => {
    await c?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const forgedAs = (keyId: string) => signRequest({ method: 'GET', path: '/v1/studies', keyId, privateKey: generateSigningKeys().privateKey });

  it('answers 429 with Retry-After once a key has failed too often, and still serves its holder', async () => {
    const from = '10.0.0.1';
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) statuses.push((await inject(c.app, 'GET', '/v1/studies', { headers: forgedAs(lead.keyId), remoteAddress: `10.0.1.${i}` })).status);
    assert.deepEqual(statuses, [401, 401, 401, 401, 429, 429], 'per key, whatever the address');
    const limited = await inject(c.app, 'GET', '/v1/studies', { headers: forgedAs(lead.keyId), remoteAddress: from });
    assert.equal(limited.status, 429);
    assert.equal(limited.json.error, 'rate_limited');
    assert.match(limited.json.message, /too many failed authentications from this key; retry after \d+ s \(bad signature/);
    assert.ok(Number(limited.headers['retry-after']) > 0 && Number(limited.headers['retry-after']) <= 60);
    // The real holder of the key is not slowed: every signed request answers at once.
    for (let i = 0; i < 20; i++) assert.equal((await inject(c.app, 'GET', '/v1/studies', { as: lead, remoteAddress: from })).status, 200);
  });

  it('limits an address that fails with unknown keys and bad invite tokens, and still serves good requests from it', async () => {
    const from = '10.0.2.1';
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) statuses.push((await inject(c.app, 'GET', '/v1/studies', { headers: forgedAs(`user-nobody${i}`), remoteAddress: from })).status);
    for (let i = 0; i < 5; i++) statuses.push((await inject(c.app, 'POST', '/v1/users/enrol', { json: { token: `uinv_${'x'.repeat(30)}${i}`, publicKey: generateSigningKeys().publicKeyRaw }, remoteAddress: from })).status);
    assert.deepEqual(statuses, [401, 401, 401, 401, 401, 401, 401, 401, 429, 429]);
    assert.equal((await inject(c.app, 'GET', '/v1/studies', { as: admin, remoteAddress: from })).status, 200);
    // A real enrolment from that address is not refused either: only failures are limited.
    const inv = await inject(c.app, 'POST', '/v1/users', { as: admin, json: { name: 'late-user', role: 'auditor' } });
    const ok = await inject(c.app, 'POST', '/v1/users/enrol', { json: { token: inv.json.token, publicKey: generateSigningKeys().publicKeyRaw }, remoteAddress: from });
    assert.equal(ok.status, 200, ok.body);
    // Another address is unaffected.
    assert.equal((await inject(c.app, 'GET', '/v1/studies', { headers: forgedAs('user-nobody-x'), remoteAddress: '10.0.3.1' })).status, 401);
  });
});
