/**
 * The trust layer over real HTTP: signed requests (bad signature, skew, replay, revoked keys), authorisation by
 * role and scope, site isolation, update validation (norm bound, declared cohort) with refusals logged and
 * audited, and property-based garbage at every decoder: never a 5xx, never a change of state.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { createPrivateKey } from 'node:crypto';
import { startCoordinator, type RunningCoordinator } from './start.js';
import { REFUSAL_TRAIL, storeDigest } from '../store/digest.js';
import { generateSigningKeys, signRequest, type SigningKeys } from '../protocol/signing.js';
import { encodeSafetensors, decodeSafetensors } from '../protocol/safetensors.js';
import { RESULT_META_KEY, type StudySpec, type TaskMessage } from '../protocol/api.js';
import type { Weights } from '../protocol/tensors.js';
import type { FastifyRequest } from 'fastify';
import { AuthError, Authenticator } from './auth.js';

interface Id {
  keyId: string;
  keys: SigningKeys;
}
type Body = { json?: unknown; raw?: Uint8Array | string; type?: string };

describe('trust layer over HTTP', () => {
  let c: RunningCoordinator;
  let dir: string;
  let admin: Id, lead: Id, auditor: Id, siteAdmin: Id;
  let a: Id, b: Id;
  let taskA: TaskMessage;
  let global: Weights;
  let studyId: string;

  async function send(method: string, path: string, opts: Body & { as?: Id; headers?: Record<string, string>; now?: number; nonce?: string } = {}) {
    const headers: Record<string, string> = {};
    let body: Uint8Array | string | undefined;
    if (opts.json !== undefined) {
      body = JSON.stringify(opts.json);
      headers['content-type'] = 'application/json';
    } else if (opts.raw !== undefined) {
      body = opts.raw;
      headers['content-type'] = opts.type ?? 'application/octet-stream';
    }
    if (opts.as) Object.assign(headers, signRequest({ method, path, body, keyId: opts.as.keyId, privateKey: opts.as.keys.privateKey, ...(opts.now !== undefined ? { now: opts.now } : {}), ...(opts.nonce ? { nonce: opts.nonce } : {}) }));
    Object.assign(headers, opts.headers ?? {});
    const r = await fetch(c.url + path, { method, headers, body: body as RequestInit['body'] });
    const buf = new Uint8Array(await r.arrayBuffer());
    let json: any;
    try {
      json = JSON.parse(new TextDecoder().decode(buf));
    } catch {
      json = undefined;
    }
    return { status: r.status, json, buf };
  }

  async function user(name: string, role: string, institution?: string): Promise<Id> {
    const inv = await send('POST', '/v1/users', { as: admin, json: { name, role, ...(institution ? { institution } : {}) } });
    assert.equal(inv.status, 200, JSON.stringify(inv.json));
    const keys = generateSigningKeys();
    const e = await send('POST', '/v1/users/enrol', { json: { token: inv.json.token, publicKey: keys.publicKeyRaw } });
    assert.equal(e.status, 200, JSON.stringify(e.json));
    return { keyId: inv.json.userId, keys };
  }

  async function site(name: string, cohort: number): Promise<Id> {
    const inv = await send('POST', '/v1/invites', { as: admin, json: { siteName: name } });
    assert.equal(inv.status, 200, JSON.stringify(inv.json));
    const keys = generateSigningKeys();
    const e = await send('POST', '/v1/enrol', { json: { token: inv.json.token, publicKey: keys.publicKeyRaw, cohorts: { heart: cohort } } });
    assert.equal(e.status, 200, JSON.stringify(e.json));
    return { keyId: e.json.siteId, keys };
  }

  const spec = (sites: string[]): StudySpec => ({
    name: 'trust',
    dataset: 'heart',
    model: { kind: 'logistic', inputDim: 13 },
    strategy: { name: 'FedAvg' },
    rounds: 1,
    fit: { localSteps: 1, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.1 } },
    sites,
    roundTimeoutSeconds: 3600,
    maxUpdateNorm: 1,
  });

  const update = (w: Weights, meta: Record<string, unknown>) => encodeSafetensors(w, { [RESULT_META_KEY]: JSON.stringify(meta) });
  const shifted = (by: number): Weights => Object.fromEntries(Object.entries(global).map(([k, t]) => [k, { shape: t.shape, data: t.data.map((v) => v + by) }]));
  const state = async () => ({ ...(await storeDigest(c.store, REFUSAL_TRAIL)), users: (await send('GET', '/v1/users', { as: admin })).json.length });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'setu-trust-'));
    c = await startCoordinator({ dataDir: dir, port: 0, tickMs: 50, maxWaitMs: 2000 });
    // The bootstrap admin signs with the key the coordinator wrote to <dataDir>/admin.key.
    admin = { keyId: c.adminKey!.keyId, keys: { privateKey: createPrivateKey(c.adminKey!.privateKey) } as SigningKeys };
    lead = await user('lead', 'study_lead');
    auditor = await user('aud', 'auditor');
    siteAdmin = await user('sadmin', 'site_admin', 'Hospital X');
    a = await site('site-a', 100);
    b = await site('site-b', 100);
    const created = await send('POST', '/v1/studies', { as: lead, json: spec(['site-a', 'site-b']) });
    assert.equal(created.status, 200, JSON.stringify(created.json));
    studyId = created.json.id;
    const started = await send('POST', `/v1/studies/${studyId}/start`, { as: lead, json: {} });
    assert.equal(started.status, 200, JSON.stringify(started.json));
    const t = await send('GET', '/v1/agent/task?waitMs=5000', { as: a });
    assert.equal(t.status, 200, JSON.stringify(t.json));
    taskA = t.json;
    const m = await send('GET', `/v1/agent/models/${taskA.modelVersionId}`, { as: a });
    assert.equal(m.status, 200);
    global = decodeSafetensors(m.buf).weights;
  });
  after(async () => {
    await c.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses unsigned, forged, stale, future and replayed requests with 401', async () => {
    assert.equal((await send('GET', '/v1/sites')).status, 401);
    assert.equal((await send('GET', '/v1/sites', { headers: { authorization: 'Bearer adm_whatever' } })).status, 401);
    // Signed by a key that is not the one registered for the key id.
    const forged = { keyId: admin.keyId, keys: generateSigningKeys() };
    const f = await send('GET', '/v1/sites', { as: forged });
    assert.equal(f.status, 401);
    assert.match(f.json.message, /bad signature/);
    // Body altered after signing.
    const h = signRequest({ method: 'POST', path: '/v1/invites', body: JSON.stringify({ siteName: 'x1' }), keyId: admin.keyId, privateKey: admin.keys.privateKey });
    const altered = await send('POST', '/v1/invites', { json: { siteName: 'x2' }, headers: h });
    assert.equal(altered.status, 401);
    for (const skew of [-6 * 60_000, 6 * 60_000]) {
      const r = await send('GET', '/v1/sites', { as: admin, now: Date.now() + skew });
      assert.equal(r.status, 401);
      assert.match(r.json.message, /off the server clock/);
    }
    const ok = await send('GET', '/v1/sites', { as: admin, nonce: 'nonce-replay-0001' });
    assert.equal(ok.status, 200);
    const replay = await send('GET', '/v1/sites', { as: admin, nonce: 'nonce-replay-0001' });
    assert.equal(replay.status, 401);
    assert.match(replay.json.message, /replayed nonce/);
    assert.equal((await send('GET', '/v1/sites', { as: { keyId: 'user-nobody', keys: generateSigningKeys() } })).status, 401);
  });

  it('lets exactly one of many concurrent copies of a signed request through', async () => {
    const h = signRequest({ method: 'GET', path: '/v1/whoami', keyId: admin.keyId, privateKey: admin.keys.privateKey });
    const rs = await Promise.all(Array.from({ length: 12 }, () => send('GET', '/v1/whoami', { headers: h })));
    assert.deepEqual(rs.map((r) => r.status).sort(), [200, ...Array(11).fill(401)]);
  });

  it('checks every action against the role table and its scope', async () => {
    assert.equal((await send('GET', '/v1/audit', { as: lead })).status, 403);
    assert.equal((await send('GET', '/v1/audit/verify', { as: lead })).status, 403);
    assert.equal((await send('GET', '/v1/audit', { as: auditor })).status, 200);
    assert.equal((await send('GET', '/v1/audit', { as: a })).status, 403);
    assert.equal((await send('GET', '/v1/sites', { as: a })).status, 403, 'a site agent cannot use operator endpoints');
    assert.equal((await send('POST', '/v1/invites', { as: lead, json: { siteName: 'by-lead' } })).status, 403);
    assert.equal((await send('POST', '/v1/users', { as: auditor, json: { name: 'x', role: 'auditor' } })).status, 403);
    assert.equal((await send('POST', '/v1/studies', { as: auditor, json: spec(['site-a']) })).status, 403);
    assert.equal((await send('GET', '/v1/agent/task', { as: lead })).status, 403, 'users cannot poll for tasks');
    // A site admin invites for their own institution only.
    assert.equal((await send('POST', '/v1/invites', { as: siteAdmin, json: { siteName: 'other-inst', institution: 'Hospital Y' } })).status, 403);
    const own = await send('POST', '/v1/invites', { as: siteAdmin, json: { siteName: 'own-inst' } });
    assert.equal(own.status, 200, JSON.stringify(own.json));
    assert.equal((await send('POST', `/v1/sites/${a.keyId}/revoke`, { as: siteAdmin })).status, 403, 'site-a is not of Hospital X');
    // A study lead acts on their own studies only.
    const lead2 = await user('lead2', 'study_lead');
    assert.equal((await send('POST', `/v1/studies/${studyId}/stop`, { as: lead2, json: {} })).status, 403);
    assert.equal((await send('GET', `/v1/studies/${studyId}/model`, { as: lead2 })).status, 403);
  });

  it('shows a site only its own tasks and the models it was given', async () => {
    const tb = await send('GET', '/v1/agent/task?waitMs=2000', { as: b });
    assert.equal(tb.status, 200);
    assert.notEqual(tb.json.taskId, taskA.taskId);
    const before = await state();
    const r = await send('POST', `/v1/agent/tasks/${taskA.taskId}/result`, { as: b, raw: update(global, { taskId: taskA.taskId, numExamples: 10 }) });
    assert.equal(r.status, 403, 'site-b cannot answer site-a\'s task');
    assert.deepEqual(await state(), before);
    // A study only site-a takes part in: site-b can never download its model.
    const only = await send('POST', '/v1/studies', { as: lead, json: { ...spec(['site-a']), name: 'only-a' } });
    assert.equal((await send('POST', `/v1/studies/${only.json.id}/start`, { as: lead, json: {} })).status, 200);
    // Once the engine has issued site-a its task, site-a may read the model and site-b still may not.
    for (let i = 0; i < 100 && (await c.store.listTasks(only.json.id, 1)).length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal((await send('GET', `/v1/agent/models/${only.json.id}.v0`, { as: a })).status, 200, 'site-a was given it');
    assert.equal((await send('GET', `/v1/agent/models/${only.json.id}.v0`, { as: b })).status, 404);
    // There is no route that serves an individual update to anyone.
    assert.equal((await send('GET', `/v1/agent/tasks/${taskA.taskId}/result`, { as: a })).status, 404);
    await send('POST', `/v1/studies/${only.json.id}/stop`, { as: lead, json: {} });
  });

  it('refuses an update beyond the norm bound or the declared cohort, logs and audits why, and changes nothing else', async () => {
    const before = await state();
    const big = await send('POST', `/v1/agent/tasks/${taskA.taskId}/result`, { as: a, raw: update(shifted(1), { taskId: taskA.taskId, numExamples: 10 }) });
    assert.equal(big.status, 400);
    assert.equal(big.json.error, 'update_norm');
    const many = await send('POST', `/v1/agent/tasks/${taskA.taskId}/result`, { as: a, raw: update(shifted(0.01), { taskId: taskA.taskId, numExamples: 101 }) });
    assert.equal(many.status, 400);
    assert.match(many.json.message, /exceeds the 100 examples/);
    assert.deepEqual(await state(), before);
    const refusals = await c.store.listRefusals(studyId);
    assert.ok(refusals.some((r) => /L2 norm/.test(r.reason)) && refusals.some((r) => /declared/.test(r.reason)));
    const entries = (await send('GET', '/v1/audit', { as: auditor })).json.entries as { kind: string; data: any }[];
    const refused = entries.filter((e) => e.kind === 'update.refused');
    assert.ok(refused.some((e) => e.data.code === 'update_norm' && /^[0-9a-f]{64}$/.test(e.data.digest)));
    // Within both bounds it is accepted, and the acceptance is audited with the update's digest.
    const body = update(shifted(0.01), { taskId: taskA.taskId, numExamples: 100 });
    const ok = await send('POST', `/v1/agent/tasks/${taskA.taskId}/result`, { as: a, raw: body });
    assert.equal(ok.status, 200, JSON.stringify(ok.json));
    const after = (await send('GET', '/v1/audit', { as: auditor })).json.entries as { kind: string; subject: string; data: any }[];
    const acc = after.find((e) => e.kind === 'update.accepted' && e.subject === taskA.taskId)!;
    assert.equal(acc.data.digest, (await import('./engine.js')).digestHex(body));
    assert.ok(after.some((e) => e.kind === 'site.enrolled') && after.some((e) => e.kind === 'task.issued'));
  });

  it('survives garbage at every decoder: no 5xx, no change of state', async () => {
    const t = (await send('GET', '/v1/agent/task?waitMs=2000', { as: b })).json as TaskMessage; // site-b's open task
    const before = await state();
    const refused = async (r: { status: number; json: any }) => {
      assert.ok(r.status >= 400 && r.status < 500, `status ${r.status}: ${JSON.stringify(r.json)}`);
    };
    // Safetensors bodies: random bytes, and valid files with random headers/metadata.
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.uint8Array({ maxLength: 512 }),
          fc.tuple(fc.string({ maxLength: 200 }), fc.uint8Array({ maxLength: 64 })).map(([h, tail]) => {
            const hb = new TextEncoder().encode(h);
            const out = new Uint8Array(8 + hb.length + tail.length);
            new DataView(out.buffer).setBigUint64(0, BigInt(hb.length), true);
            out.set(hb, 8);
            out.set(tail, 8 + hb.length);
            return out;
          }),
          fc.record({ taskId: fc.oneof(fc.constant(t.taskId), fc.string()), numExamples: fc.oneof(fc.integer(), fc.double()), extra: fc.anything() }, { requiredKeys: [] }).map((m) => update(shifted(5), m)),
        ),
        async (bytes) => refused(await send('POST', `/v1/agent/tasks/${t.taskId}/result`, { as: b, raw: bytes })),
      ),
      { numRuns: 60 },
    );
    // JSON bodies at every JSON endpoint, signed by a caller allowed to use it.
    const targets: [string, string, Id | undefined][] = [
      ['POST', '/v1/invites', admin],
      ['POST', '/v1/users', admin],
      ['POST', '/v1/studies', lead],
      ['PUT', '/v1/agent/cohorts', b],
      ['POST', '/v1/keys/rotate', b],
      ['POST', '/v1/enrol', undefined],
      ['POST', '/v1/users/enrol', undefined],
      ['POST', `/v1/agent/tasks/${t.taskId}/result`, b],
    ];
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...targets), fc.oneof(fc.jsonValue(), fc.string(), fc.anything()), async ([m, p, as], v) => {
        const raw = typeof v === 'string' ? v : JSON.stringify(v) ?? 'undefined';
        await refused(await send(m, p, { raw, type: 'application/json', ...(as ? { as } : {}) }));
      }),
      { numRuns: 120 },
    );
    // Signature headers: random values in each of the four, on a request that would otherwise pass.
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('x-setu-key-id', 'x-setu-timestamp', 'x-setu-nonce', 'x-setu-signature'), fc.string({ maxLength: 120 }), async (name, value) => {
        const h = signRequest({ method: 'POST', path: '/v1/invites', body: JSON.stringify({ siteName: 'never' }), keyId: admin.keyId, privateKey: admin.keys.privateKey });
        const clean = value.replace(/[^\x20-\x7e]/g, '');
        const r = await send('POST', '/v1/invites', { json: { siteName: 'never' }, headers: { ...h, [name]: clean } });
        if ((h as Record<string, string>)[name] === clean) return; // unchanged header: the request is valid (and made once)
        assert.equal(r.status, 401, `${name}=${JSON.stringify(clean)} gave ${r.status}`);
      }),
      { numRuns: 80 },
    );
    assert.deepEqual(await state(), before);
  });

  it('rotates a key only for its holder (signed with the old key); the old key is refused afterwards', async () => {
    const next = generateSigningKeys();
    const r = await send('POST', '/v1/keys/rotate', { as: a, json: { publicKey: next.publicKeyRaw } });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    assert.equal((await send('GET', '/v1/agent/task', { as: a })).status, 401, 'the old key no longer works');
    const old = a;
    a = { keyId: a.keyId, keys: next };
    assert.ok([200, 204].includes((await send('GET', '/v1/agent/task', { as: a })).status), 'the new key is accepted');
    const entries = (await send('GET', '/v1/audit', { as: admin })).json.entries as { kind: string; subject: string; data: any }[];
    assert.ok(entries.some((e) => e.kind === 'key.changed' && e.subject === old.keyId && e.data.publicKey === next.publicKeyRaw));
  });

  it('refuses revoked sites and users with 401 and audits the revocation', async () => {
    const r = await send('POST', `/v1/sites/${b.keyId}/revoke`, { as: admin, json: {} });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    const poll = await send('GET', '/v1/agent/task', { as: b });
    assert.equal(poll.status, 401);
    assert.equal(poll.json.error, 'revoked');
    assert.equal((await send('POST', `/v1/users/${auditor.keyId}/revoke`, { as: admin, json: {} })).status, 200);
    const au = await send('GET', '/v1/audit', { as: auditor });
    assert.equal(au.status, 401);
    const entries = (await send('GET', '/v1/audit', { as: admin })).json.entries as { kind: string; subject: string }[];
    assert.ok(entries.some((e) => e.kind === 'site.revoked' && e.subject === b.keyId));
    assert.ok(entries.some((e) => e.kind === 'user.revoked' && e.subject === auditor.keyId));
    const v = await send('GET', '/v1/audit/verify', { as: admin });
    assert.equal(v.json.ok, true, JSON.stringify(v.json));
  });
  it('remembers a verified caller, yet refuses its very next request once another coordinator revokes or re-keys it', async () => {
    // Another coordinator on the same store: its own Authenticator (its own memory of callers), not on this bus.
    const elsewhere = new Authenticator(c.store, Date.now);
    const signed = (who: Id, path = '/v1/whoami', nonce?: string) => ({ method: 'GET', url: path, headers: Object.fromEntries(Object.entries(signRequest({ method: 'GET', path, keyId: who.keyId, privateKey: who.keys.privateKey, ...(nonce ? { nonce } : {}) })).map(([k, v]) => [k.toLowerCase(), v])) }) as unknown as FastifyRequest;
    const refusal = async (req: FastifyRequest) => {
      try {
        await elsewhere.authenticate(req);
      } catch (e) {
        assert.ok(e instanceof AuthError, String(e));
        return `${e.code}: ${e.message}`;
      }
      return 'accepted';
    };
    const s = await site('site-cached', 10);
    const first = signed(s, '/v1/whoami', 'nonce-cached-00000001');
    assert.equal((await elsewhere.authenticate(first)).principal.id, s.keyId);
    assert.equal((await elsewhere.authenticate(signed(s))).principal.id, s.keyId, 'remembered');
    assert.match(await refusal(first), /replayed nonce/, 'a remembered caller\'s nonce is still recorded once');
    assert.equal((await send('POST', `/v1/sites/${s.keyId}/revoke`, { as: admin, json: {} })).status, 200);
    assert.match(await refusal(signed(s)), /^revoked: site site-cached is revoked/, 'revoked by the other coordinator: refused at once');
    // A user rotates its key through this coordinator: the other refuses the old key at once, and takes the new one.
    const u = await user('cached-user', 'auditor');
    assert.equal((await elsewhere.authenticate(signed(u))).principal.id, u.keyId);
    const next = generateSigningKeys();
    assert.equal((await send('POST', '/v1/keys/rotate', { as: u, json: { publicKey: next.publicKeyRaw } })).status, 200);
    assert.match(await refusal(signed(u)), /^unauthenticated: bad signature/);
    assert.equal((await elsewhere.authenticate(signed({ keyId: u.keyId, keys: next }))).principal.id, u.keyId);
    assert.equal((await send('POST', `/v1/users/${u.keyId}/revoke`, { as: admin, json: {} })).status, 200);
    assert.match(await refusal(signed({ keyId: u.keyId, keys: next })), /^revoked: /);
  });
});
