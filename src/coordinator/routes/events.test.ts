/**
 * The live event stream over real HTTP: stream tokens only for signed-in users, refused when forged,
 * tampered or expired; the stream carries the bus events the role may see (never the internal 'tasks'
 * wake-ups) and the coordinator closes open streams when it stops. Tokens are bound to a live identity:
 * revoking the user or rotating its key ends its open stream at once and voids its tokens; the MAC key is
 * derived from coordinator.key (nothing in the store), so a restarted coordinator still accepts a token.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCoordinator, type RunningCoordinator } from '../start.js';
import { generateSigningKeys, signRequest } from '../../protocol/signing.js';
import { streamTokenKey, visibleTo } from './events.js';

interface Id {
  keyId: string;
  privateKey: string;
}

describe('GET /v1/events (SSE) and stream tokens', () => {
  let c: RunningCoordinator;
  let dir: string;
  let admin: Id, lead: Id;

  const call = async (method: string, path: string, as?: Id, body?: unknown) => {
    const text = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string> = as ? { ...signRequest({ method, path, body: text, keyId: as.keyId, privateKey: as.privateKey }) } : {};
    if (text !== undefined) headers['content-type'] = 'application/json';
    const r = await fetch(c.url + path, { method, headers, ...(text !== undefined ? { body: text } : {}) });
    const raw = await r.text();
    return { status: r.status, json: raw ? JSON.parse(raw) : undefined };
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'setu-events-'));
    c = await startCoordinator({ dataDir: dir, port: 0 });
    assert.ok(c.adminKey, 'a fresh coordinator writes admin.key');
    admin = { keyId: c.adminKey.keyId, privateKey: c.adminKey.privateKey };
    const inv = await call('POST', '/v1/users', admin, { name: 'lead-events', role: 'study_lead' });
    assert.equal(inv.status, 200, JSON.stringify(inv.json));
    const keys = generateSigningKeys();
    assert.equal((await call('POST', '/v1/users/enrol', undefined, { token: inv.json.token, publicKey: keys.publicKeyRaw })).status, 200);
    lead = { keyId: inv.json.userId, privateKey: keys.privateKeyPem };
  });

  after(async () => {
    await c?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('gives a stream token only to a signed-in user, naming the role', async () => {
    assert.equal((await call('POST', '/v1/events/token', undefined, {})).status, 401);
    const r = await call('POST', '/v1/events/token', lead, {});
    assert.equal(r.status, 200);
    assert.equal(r.json.role, 'study_lead');
    assert.match(r.json.token, /^sst_/);
    assert.ok(r.json.expiresAt > Date.now());
  });

  it('refuses a missing, tampered, forged or expired token, and an unknown study', async () => {
    const { json } = await call('POST', '/v1/events/token', lead, {});
    const get = (q: string) => fetch(`${c.url}/v1/events?${q}`).then(async (r) => ({ status: r.status, body: await r.text() }));
    assert.equal((await get('')).status, 400);
    // Changing the role inside the payload breaks the MAC.
    const [payload, mac] = (json.token as string).slice(4).split('.') as [string, string];
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString());
    const forgedPayload = Buffer.from(JSON.stringify({ ...claims, role: 'consortium_admin' })).toString('base64url');
    assert.equal((await get(`token=sst_${forgedPayload}.${mac}`)).status, 401);
    assert.equal((await get(`token=sst_${payload}.${'A'.repeat(43)}`)).status, 401);
    // A correctly MACed token whose time is up (made with the key derived from coordinator.key, as the coordinator would).
    const key = streamTokenKey(c.audit.key);
    const oldPayload = Buffer.from(JSON.stringify({ ...claims, exp: Date.now() - 1000 })).toString('base64url');
    const oldMac = createHmac('sha256', key).update(`setu-stream\n${oldPayload}`).digest('base64url');
    const expired = await get(`token=sst_${oldPayload}.${oldMac}`);
    assert.equal(expired.status, 401);
    assert.match(expired.body, /expired/);
    assert.equal((await get(`token=${encodeURIComponent(json.token)}&study=no-such-study`)).status, 404);
  });

  it('streams the events the role may see, in order, and never the internal wake-ups', async () => {
    const { json } = await call('POST', '/v1/events/token', lead, {});
    const ac = new AbortController();
    const res = await fetch(`${c.url}/v1/events?token=${encodeURIComponent(json.token)}`, { signal: ac.signal });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
    const reader = res.body!.getReader();
    const seen: { event: string; data: any }[] = [];
    let buf = '';
    const readUntil = async (n: number) => {
      while (seen.length < n) {
        const { value, done } = await reader.read();
        if (done) throw new Error('stream ended early');
        buf += new TextDecoder().decode(value);
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const frame = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const event = /^event: (.+)$/m.exec(frame)?.[1];
          const data = /^data: (.+)$/m.exec(frame)?.[1];
          if (event && data) seen.push({ event, data: JSON.parse(data) });
        }
      }
    };
    await readUntil(1);
    assert.deepEqual(seen[0]!.event, 'ready');
    assert.equal(seen[0]!.data.role, 'study_lead');
    c.bus.emit({ type: 'tasks', siteIds: ['site-x'] });
    c.bus.emit({ type: 'round.opened', studyId: 's1', round: 1, kind: 'fit', sites: 4 });
    c.bus.emit({ type: 'update.accepted', studyId: 's1', round: 1, siteId: 'site-a', received: 1, expected: 4 });
    c.bus.emit({ type: 'round.committed', studyId: 's1', round: 1, kind: 'fit', metrics: { 'fit.loss': 0.5 } });
    await readUntil(4);
    assert.deepEqual(
      seen.map((s) => s.event),
      ['ready', 'round.opened', 'update.accepted', 'round.committed'],
    );
    assert.equal(seen[3]!.data.metrics['fit.loss'], 0.5);
    ac.abort();
  });

  /** Reads Server-Sent Events frames from a fetch response. */
  function events(res: Response): { next: () => Promise<{ event: string; data: any } | undefined> } {
    const reader = res.body!.getReader();
    let buf = '';
    return {
      async next() {
        for (;;) {
          const i = buf.indexOf('\n\n');
          if (i >= 0) {
            const frame = buf.slice(0, i);
            buf = buf.slice(i + 2);
            const event = /^event: (.+)$/m.exec(frame)?.[1];
            const data = /^data: (.+)$/m.exec(frame)?.[1];
            if (event && data) return { event, data: JSON.parse(data) };
            continue;
          }
          const { value, done } = await reader.read();
          if (done) return undefined;
          buf += new TextDecoder().decode(value);
        }
      },
    };
  }

  async function userWith(role: string, name: string): Promise<Id> {
    const inv = await call('POST', '/v1/users', admin, { name, role });
    const keys = generateSigningKeys();
    assert.equal((await call('POST', '/v1/users/enrol', undefined, { token: inv.json.token, publicKey: keys.publicKeyRaw })).status, 200);
    return { keyId: inv.json.userId, privateKey: keys.privateKeyPem };
  }

  it('ends a revoked user’s open stream at once, and voids its tokens', async () => {
    const auditor = await userWith('auditor', 'auditor-revoked');
    const { json } = await call('POST', '/v1/events/token', auditor, {});
    const spare = (await call('POST', '/v1/events/token', auditor, {})).json.token as string;
    const res = await fetch(`${c.url}/v1/events?token=${encodeURIComponent(json.token)}`);
    const s = events(res);
    assert.equal((await s.next())?.event, 'ready');
    const revokedAt = Date.now();
    assert.equal((await call('POST', `/v1/users/${auditor.keyId}/revoke`, admin)).status, 200);
    const ev = await s.next();
    assert.equal(ev?.event, 'revoked');
    assert.match(ev!.data.reason, /is revoked/);
    assert.equal(await s.next(), undefined, 'the stream has ended');
    // At once: well before the 15 s heartbeat that also re-checks the holder.
    assert.ok(Date.now() - revokedAt < 5000, `ended ${Date.now() - revokedAt} ms after the revocation`);
    const again = await fetch(`${c.url}/v1/events?token=${encodeURIComponent(spare)}`);
    assert.equal(again.status, 401, 'a token issued before the revocation no longer opens a stream');
    assert.match(await again.text(), /revoked/);
  });

  it('ends the stream when the holder rotates its key (a stolen key is rotated away)', async () => {
    const auditor = await userWith('auditor', 'auditor-rotating');
    const { json } = await call('POST', '/v1/events/token', auditor, {});
    const s = events(await fetch(`${c.url}/v1/events?token=${encodeURIComponent(json.token)}`));
    assert.equal((await s.next())?.event, 'ready');
    assert.equal((await call('POST', '/v1/keys/rotate', auditor, { publicKey: generateSigningKeys().publicKeyRaw })).status, 200);
    const ev = await s.next();
    assert.equal(ev?.event, 'revoked');
    assert.match(ev!.data.reason, /key of user .* has changed/);
    assert.equal((await fetch(`${c.url}/v1/events?token=${encodeURIComponent(json.token)}`)).status, 401);
  });

  it('keeps no MAC key in the store: a restarted coordinator derives the same one from coordinator.key', async () => {
    assert.equal(await c.store.getKv('events_stream_key'), undefined);
    const { json } = await call('POST', '/v1/events/token', lead, {});
    await c.close();
    c = await startCoordinator({ dataDir: dir, port: 0 });
    const ac = new AbortController();
    const res = await fetch(`${c.url}/v1/events?token=${encodeURIComponent(json.token)}`, { signal: ac.signal });
    assert.equal(res.status, 200);
    assert.equal((await events(res).next())?.event, 'ready');
    ac.abort();
  });

  it('filters by study and role', () => {
    const opened = { type: 'round.opened', studyId: 's1', round: 1, kind: 'fit', sites: 2 } as const;
    assert.equal(visibleTo('study_lead', opened, 's1'), true);
    assert.equal(visibleTo('study_lead', opened, 's2'), false);
    assert.equal(visibleTo('auditor', opened), true);
    assert.equal(visibleTo('site', opened), false, "site agents' own role does not watch studies");
    assert.equal(visibleTo('nobody', opened), false);
    assert.equal(visibleTo('consortium_admin', { type: 'tasks', siteIds: [] }), false);
    assert.equal(visibleTo('consortium_admin', { type: 'update.refused', studyId: null, round: null, siteId: null, reason: 'malformed' }), true);
  });

  it('closes open streams when the coordinator stops', async () => {
    const { json } = await call('POST', '/v1/events/token', admin, {});
    const res = await fetch(`${c.url}/v1/events?token=${encodeURIComponent(json.token)}`);
    const reader = res.body!.getReader();
    await reader.read(); // retry + ready
    const closing = c.close();
    // The stream ends (rather than holding the server open) and close() returns.
    for (;;) if ((await reader.read()).done) break;
    await closing;
    c = undefined as unknown as RunningCoordinator;
  });
});
