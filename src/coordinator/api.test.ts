/**
 * Bad input over real HTTP: every refusal is a 4xx with a message saying what is wrong, and the
 * store's rounds, tasks and updates are unchanged (refusals are logged, which is the point).
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCoordinator, type RunningCoordinator } from './start.js';
import { REFUSAL_TRAIL, storeDigest } from '../store/digest.js';
import type { KeyObject } from 'node:crypto';
import { generateSigningKeys, signRequest } from '../protocol/signing.js';
import { encodeSafetensors, decodeSafetensors } from '../protocol/safetensors.js';
import { RESULT_META_KEY, type TaskMessage } from '../protocol/api.js';
import { mapWeights, tensor, type Weights } from '../protocol/tensors.js';

interface Signer {
  keyId: string;
  privateKey: KeyObject | string;
}
interface Site {
  id: string;
  /** Every request is signed with the site's Ed25519 key (registered at enrolment). */
  credential: Signer;
}

describe('coordinator API refuses bad input and changes nothing', () => {
  let c: RunningCoordinator;
  let dir: string;
  let a: Site, b: Site;
  let taskA: TaskMessage;
  let global: Weights;

  const call = async (method: string, path: string, opts: { token?: string | Signer; json?: unknown; body?: Uint8Array; type?: string } = {}) => {
    const headers: Record<string, string> = {};
    if (typeof opts.token === 'string') headers['authorization'] = `Bearer ${opts.token}`;
    let body: string | Uint8Array | undefined;
    if (opts.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(opts.json);
    } else if (opts.body) {
      headers['content-type'] = opts.type ?? 'application/octet-stream';
      body = opts.body;
    }
    if (opts.token && typeof opts.token !== 'string') Object.assign(headers, signRequest({ method, path, body, keyId: opts.token.keyId, privateKey: opts.token.privateKey }));
    const r = await fetch(c.url + path, { method, headers, body: body as RequestInit['body'] });
    const buf = new Uint8Array(await r.arrayBuffer());
    let json: any;
    try {
      json = JSON.parse(new TextDecoder().decode(buf));
    } catch {
      json = undefined;
    }
    return { status: r.status, json, buf };
  };
  const adminKey = (): Signer => ({ keyId: c.adminKey!.keyId, privateKey: c.adminKey!.privateKey });
  const admin = (method: string, path: string, json?: unknown) => call(method, path, { token: adminKey(), ...(json !== undefined ? { json } : {}) });
  // Studies are written and started by a study lead (the consortium admin may not create one).
  let leadKey: Signer;
  const lead = (method: string, path: string, json?: unknown) => call(method, path, { token: leadKey, ...(json !== undefined ? { json } : {}) });

  async function enrolSite(name: string): Promise<Site> {
    const inv = await admin('POST', '/v1/invites', { siteName: name });
    assert.equal(inv.status, 200, JSON.stringify(inv.json));
    const keys = generateSigningKeys();
    const e = await call('POST', '/v1/enrol', { json: { token: inv.json.token, publicKey: keys.publicKeyRaw, cohorts: { heart: 1000 } } });
    assert.equal(e.status, 200, JSON.stringify(e.json));
    return { id: e.json.siteId, credential: { keyId: e.json.siteId, privateKey: keys.privateKey } };
  }

  function update(w: Weights, meta: Record<string, unknown>): Uint8Array {
    return encodeSafetensors(w, { [RESULT_META_KEY]: JSON.stringify(meta) });
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'setu-api-'));
    c = await startCoordinator({ dataDir: dir, port: 0, tickMs: 50, bodyLimit: 64 * 1024 });
    a = await enrolSite('site-a');
    b = await enrolSite('site-b');
    const li = await admin('POST', '/v1/users', { name: 'lead', role: 'study_lead' });
    const lk = generateSigningKeys();
    assert.equal((await call('POST', '/v1/users/enrol', { json: { token: li.json.token, publicKey: lk.publicKeyRaw } })).status, 200);
    leadKey = { keyId: li.json.userId, privateKey: lk.privateKey };
    const s = await lead('POST', '/v1/studies', {
      name: 'bad input',
      dataset: 'heart',
      model: { kind: 'logistic', inputDim: 13 },
      strategy: { name: 'FedAvg' },
      rounds: 2,
      fit: { localSteps: 1, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.01 } },
    });
    assert.equal(s.status, 200, JSON.stringify(s.json));
    assert.equal((await lead('POST', `/v1/studies/${s.json.id}/start`, {})).status, 200);
    const t = await call('GET', '/v1/agent/task?waitMs=5000', { token: a.credential });
    assert.equal(t.status, 200);
    taskA = t.json;
    const m = await call('GET', `/v1/agent/models/${taskA.modelVersionId}`, { token: a.credential });
    global = decodeSafetensors(m.buf).weights;
  });

  after(async () => {
    await c.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function refused(status: number, pattern: RegExp, fn: () => Promise<{ status: number; json: any }>) {
    const before = await storeDigest(c.store, REFUSAL_TRAIL);
    const r = await fn();
    assert.equal(r.status, status, `expected ${status}, got ${r.status}: ${JSON.stringify(r.json)}`);
    assert.match(r.json?.message ?? '', pattern);
    assert.deepEqual(await storeDigest(c.store, REFUSAL_TRAIL), before, 'a refused request must not change the store');
    assert.equal((await c.store.getTask(taskA.taskId))?.status, 'delivered', 'the task stays open');
  }

  it('refuses an unknown credential with 401', async () => {
    await refused(401, /must be signed/, () => call('GET', '/v1/agent/task', { token: 'site_forged' }));
    await refused(401, /missing/, () => call('GET', '/v1/studies'));
  });

  it('refuses an update of the wrong shape', async () => {
    const w: Weights = { weight: { shape: [1, 12], data: new Float32Array(12) }, bias: global['bias']! };
    await refused(400, /shape \[1,12\], expected \[1,13\]/, () => call('POST', `/v1/agent/tasks/${taskA.taskId}/result`, { token: a.credential, body: update(w, { taskId: taskA.taskId, numExamples: 10 }) }));
    const extra: Weights = { ...global, extra: { shape: [1], data: new Float32Array(1) } };
    await refused(400, /unexpected tensor "extra"/, () => call('POST', `/v1/agent/tasks/${taskA.taskId}/result`, { token: a.credential, body: update(extra, { taskId: taskA.taskId, numExamples: 10 }) }));
    // Names that are Object.prototype keys are ordinary (unexpected) names: a 400 naming them, never a 500.
    for (const name of ['constructor', '__proto__', 'toString', 'hasOwnProperty']) {
      const proto = mapWeights([...Object.keys(global), name], (k) => global[k] ?? tensor([1]));
      await refused(400, new RegExp(`unexpected tensor "${name}"`), () => call('POST', `/v1/agent/tasks/${taskA.taskId}/result`, { token: a.credential, body: update(proto, { taskId: taskA.taskId, numExamples: 10 }) }));
      const swapped = mapWeights(['weight', name], (k) => global[k] ?? global['bias']!);
      await refused(400, /missing tensor "bias"/, () => call('POST', `/v1/agent/tasks/${taskA.taskId}/result`, { token: a.credential, body: update(swapped, { taskId: taskA.taskId, numExamples: 10 }) }));
    }
  });

  it('refuses NaN and infinity', async () => {
    for (const bad of [NaN, Infinity, -Infinity]) {
      const w: Weights = { weight: { shape: [1, 13], data: new Float32Array(13).fill(0.1) }, bias: global['bias']! };
      w['weight']!.data[5] = bad;
      await refused(400, /non-finite value .* at index 5/, () => call('POST', `/v1/agent/tasks/${taskA.taskId}/result`, { token: a.credential, body: update(w, { taskId: taskA.taskId, numExamples: 10 }) }));
    }
  });

  it('refuses a body over the configured limit with 413', async () => {
    await refused(413, /exceeds the limit of 65536 bytes/, () => call('POST', `/v1/agent/tasks/${taskA.taskId}/result`, { token: a.credential, body: new Uint8Array(70 * 1024) }));
  });

  it('refuses a result for a task the site was not given', async () => {
    await refused(403, /was not given to this site/, () => call('POST', `/v1/agent/tasks/${taskA.taskId}/result`, { token: b.credential, body: update(global, { taskId: taskA.taskId, numExamples: 10 }) }));
    await refused(403, /was not given to this site/, () => call('POST', `/v1/agent/tasks/no-such-task/result`, { token: a.credential, body: update(global, { taskId: 'no-such-task', numExamples: 10 }) }));
  });

  it('refuses malformed bodies and metadata, naming the problem', async () => {
    const url = `/v1/agent/tasks/${taskA.taskId}/result`;
    await refused(400, /malformed safetensors/, () => call('POST', url, { token: a.credential, body: new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9]) }));
    await refused(400, /lacks "setu.result"/, () => call('POST', url, { token: a.credential, body: encodeSafetensors(global) }));
    await refused(400, /numExamples/, () => call('POST', url, { token: a.credential, body: update(global, { taskId: taskA.taskId, numExamples: 'ten' }) }));
    await refused(400, /names task other/, () => call('POST', url, { token: a.credential, body: update(global, { taskId: 'other', numExamples: 10 }) }));
    await refused(400, /at least one training example/, () => call('POST', url, { token: a.credential, body: update(global, { taskId: taskA.taskId, numExamples: 0 }) }));
    await refused(415, /safetensors body/, () => call('POST', url, { token: a.credential, json: { taskId: taskA.taskId, numExamples: 10 } }));
  });

  it('refuses a malformed study with the field named, and a site credential on operator endpoints', async () => {
    const before = await storeDigest(c.store, REFUSAL_TRAIL);
    const r = await lead('POST', '/v1/studies', { name: 'x', dataset: 'heart', model: { kind: 'logistic', inputDim: 13 }, strategy: { name: 'FedAvg' }, rounds: 0, fit: { localSteps: 1, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.1 } } });
    assert.equal(r.status, 400);
    assert.match(r.json.message, /rounds/);
    const u = await lead('POST', '/v1/studies', { name: 'x', dataset: 'heart', model: { kind: 'logistic', inputDim: 13 }, strategy: { name: 'FedMagic' }, rounds: 1, fit: { localSteps: 1, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.1 } } });
    assert.equal(u.status, 400);
    assert.match(u.json.message, /unknown strategy "FedMagic"/);
    const s = await call('POST', '/v1/studies', { token: a.credential, json: { name: 'x', dataset: 'heart', model: { kind: 'logistic', inputDim: 13 }, strategy: { name: 'FedAvg' }, rounds: 1, fit: { localSteps: 1, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.1 } } } });
    assert.equal(s.status, 403);
    const bad = await call('POST', '/v1/invites', { token: adminKey(), body: new TextEncoder().encode('{not json'), type: 'application/json' });
    assert.equal(bad.status, 400);
    assert.deepEqual(await storeDigest(c.store, REFUSAL_TRAIL), before);
  });

  it('logs every refused update with its reason, and then accepts a valid one', async () => {
    const reasons = (await c.store.listRefusals(taskA.studyId)).map((r) => r.reason);
    assert.ok(reasons.some((r) => /non-finite/.test(r)));
    assert.ok(reasons.some((r) => /shape/.test(r)));
    const ok = await call('POST', `/v1/agent/tasks/${taskA.taskId}/result`, { token: a.credential, body: update(global, { taskId: taskA.taskId, numExamples: 10, trainMetrics: { loss: 0.5 } }) });
    assert.equal(ok.status, 200, JSON.stringify(ok.json));
    const again = await call('POST', `/v1/agent/tasks/${taskA.taskId}/result`, { token: a.credential, body: update(global, { taskId: taskA.taskId, numExamples: 10 }) });
    assert.equal(again.status, 409);
  });

  it('never lets one site read another site\'s task or model', async () => {
    // site-b has its own task for round 1; it may read the model, but a made-up version is 404.
    const t = await call('GET', '/v1/agent/task?waitMs=2000', { token: b.credential });
    assert.equal(t.status, 200);
    assert.notEqual(t.json.taskId, taskA.taskId);
    assert.equal((await call('GET', `/v1/agent/models/someone-elses`, { token: b.credential })).status, 404);
  });
});
