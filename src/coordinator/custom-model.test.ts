/**
 * Model-agnostic studies over real HTTP: a custom model defined by its initial weights (any names, including
 * Object.prototype keys; F16 and integer buffers), per-tensor rules, updates checked against the study's names,
 * shapes and dtypes before decoding, trainer declarations checked at start, and FedAvg and Cyclic rounds whose
 * global models keep every tensor as an ordinary name. Each refusal is a 4xx naming the problem and changes nothing.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCoordinator, type RunningCoordinator } from './start.js';
import { REFUSAL_TRAIL, storeDigest } from '../store/digest.js';
import { generateSigningKeys } from '../protocol/signing.js';
import { ApiError, HttpClient, type Signer } from '../site/http.js';
import { decodeSafetensors, encodeSafetensors } from '../protocol/safetensors.js';
import { RESULT_META_KEY, type TaskMessage, type TrainerDeclaration } from '../protocol/api.js';
import { waitFor } from '../testing/processes.js';
import { trainerDeclaration } from '../site/trainers/declaration.js';
import type { SiteConfig } from '../site/config.js';
import { halfToFloat, floatToHalfBits, mapWeights, narrowForTransport, tensor, type Weights } from '../protocol/tensors.js';

const EXTERNAL: TrainerDeclaration = { kind: 'external', description: 'external (python3 train.py)', models: ['custom'], features: ['evaluate', 'tensor-rules'] };
const BUILTIN: TrainerDeclaration = { kind: 'builtin', description: 'built-in', models: ['logistic', 'mlp', 'cox'], features: ['evaluate', 'fedprox', 'scaffold', 'dp-sgd', 'dp-client', 'secagg', 'tensor-rules'] };

/** A state_dict-like tensor set whose names include Object.prototype's keys. */
function initial(): Weights {
  return mapWeights(['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'bn.running_mean', 'bn.num_batches_tracked', 'frozen.weight'], (k) => {
    switch (k) {
      case 'constructor': return tensor([2, 2], new Float32Array([0.5, -1, 0.25, 2]), 'F16');
      case 'bn.num_batches_tracked': return tensor([], new Float32Array([0]), 'I64');
      case 'toString': return tensor([3], new Float32Array([1, 2, 3]), 'BF16');
      default: return tensor([2], new Float32Array([1, -1]));
    }
  });
}
const RULES = [{ match: 'bn.*', rule: 'local' }, { match: 'frozen.*', rule: 'skip' }];
const AGGREGATED = ['__proto__', 'constructor', 'toString', 'hasOwnProperty'];

describe('custom models: initial weights, tensor rules, dtypes and prototype-key names over HTTP', () => {
  let c: RunningCoordinator;
  let dir: string;
  const sites: { id: string; key: Signer }[] = [];
  let leadKey: Signer, otherLead: Signer;

  /** A request through Setu's own client (signed when `key` is given); a refusal comes back as its status and message. */
  const call = async (method: string, path: string, key: Signer | undefined, opts: { json?: unknown; body?: Uint8Array } = {}) => {
    const http = new HttpClient({ baseUrl: c.url, ...(key ? { signer: key } : {}), giveUpAfterMs: 20_000 });
    const body = opts.json !== undefined ? { type: 'application/json', data: JSON.stringify(opts.json) } : opts.body ? { type: 'application/octet-stream', data: opts.body } : undefined;
    try {
      const r = await http.request(method, path, body);
      let json: any;
      try {
        json = r.json();
      } catch {
        json = undefined;
      }
      return { status: r.status, json, buf: r.body };
    } catch (e) {
      if (e instanceof ApiError) return { status: e.status, json: { error: e.code, message: e.message } as any, buf: new Uint8Array() };
      throw e;
    }
  };
  const admin = (method: string, path: string, json?: unknown) => call(method, path, { keyId: c.adminKey!.keyId, privateKey: c.adminKey!.privateKey }, json === undefined ? {} : { json });
  const lead = (method: string, path: string, json?: unknown) => call(method, path, leadKey, json === undefined ? {} : { json });
  const putWeights = (id: string, body: Uint8Array, key = leadKey) => call('PUT', `/v1/studies/${id}/initial-weights`, key, { body });

  async function user(name: string): Promise<Signer> {
    const inv = await admin('POST', '/v1/users', { name, role: 'study_lead' });
    const k = generateSigningKeys();
    assert.equal((await call('POST', '/v1/users/enrol', undefined, { json: { token: inv.json.token, publicKey: k.publicKeyRaw } })).status, 200);
    return { keyId: inv.json.userId, privateKey: k.privateKey };
  }

  const study = (name: string, extra: Record<string, unknown> = {}) => ({
    name, dataset: 'images', model: { kind: 'custom', name: 'tiny-net' }, strategy: { name: 'FedAvg' }, rounds: 2,
    fit: { epochs: 1, batchSize: 8, optimizer: { kind: 'sgd', lr: 0.1 } }, tensorRules: RULES, roundTimeoutSeconds: 60, ...extra,
  });

  /** Asserts a refusal with its status and message, and that the store's tables did not change. */
  async function refused(status: number, pattern: RegExp, fn: () => Promise<{ status: number; json: any }>) {
    const before = await storeDigest(c.store, REFUSAL_TRAIL);
    const r = await fn();
    assert.equal(r.status, status, `expected ${status}, got ${r.status}: ${JSON.stringify(r.json)}`);
    assert.match(r.json?.message ?? '', pattern);
    assert.deepEqual(await storeDigest(c.store, REFUSAL_TRAIL), before, 'a refused request must not change the store');
  }

  const update = (w: Weights, meta: Record<string, unknown>) => encodeSafetensors(w, { [RESULT_META_KEY]: JSON.stringify(meta) });
  const poll = async (s: { key: Signer }): Promise<TaskMessage> => {
    const t = await call('GET', '/v1/agent/task?waitMs=5000', s.key);
    assert.equal(t.status, 200, `no task: ${t.status}`);
    return t.json as TaskMessage;
  };
  const model = async (s: { key: Signer }, id: string) => decodeSafetensors((await call('GET', `/v1/agent/models/${id}`, s.key)).buf).weights;
  const statusOf = async (id: string) => (await lead('GET', `/v1/studies/${id}`)).json;
  /** The study's latest model, as its lead downloads it. */
  const latest = async (id: string) => decodeSafetensors((await lead('GET', `/v1/studies/${id}/model`)).buf).weights;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'setu-custom-'));
    c = await startCoordinator({ dataDir: dir, port: 0, tickMs: 50 });
    for (const name of ['site-a', 'site-b']) {
      const inv = await admin('POST', '/v1/invites', { siteName: name });
      const k = generateSigningKeys();
      const e = await call('POST', '/v1/enrol', undefined, { json: { token: inv.json.token, publicKey: k.publicKeyRaw, cohorts: { images: 100 } } });
      sites.push({ id: e.json.siteId, key: { keyId: e.json.siteId, privateKey: k.privateKey } });
    }
    leadKey = await user('lead');
    otherLead = await user('other-lead');
  });

  after(async () => {
    await c.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses at create what a custom model can never do, and refuses to start without initial weights', async () => {
    await refused(400, /SCAFFOLD needs control variates inside the site's training loop/, () => lead('POST', '/v1/studies', study('scaffold', { strategy: { name: 'SCAFFOLD' } })));
    await refused(400, /tensorRules\/0\/rule/, () => lead('POST', '/v1/studies', study('bad rule', { tensorRules: [{ match: 'x', rule: 'average' }] })));
    // A built-in family's rules are checked against its tensors at once.
    await refused(400, /\/tensorRules\/0: "head\.\*" matches no tensor of the model \(it has 2: weight, bias\)/, () =>
      lead('POST', '/v1/studies', { ...study('logistic rules'), model: { kind: 'logistic', inputDim: 3 }, tensorRules: [{ match: 'head.*', rule: 'local' }] }));
    const s = await lead('POST', '/v1/studies', study('no weights yet'));
    assert.equal(s.status, 200, JSON.stringify(s.json));
    assert.equal(s.json.next, `PUT /v1/studies/${s.json.id}/initial-weights`);
    await refused(409, /has a custom model and no initial weights yet/, () => lead('POST', `/v1/studies/${s.json.id}/start`, {}));
  });

  it('refuses bad initial weights, naming the problem, and takes one good upload', async () => {
    const s = (await lead('POST', '/v1/studies', study('uploads'))).json;
    const good = encodeSafetensors(initial());
    await refused(400, /not valid safetensors: file is 3 bytes/, () => putWeights(s.id, new Uint8Array([1, 2, 3])));
    await refused(400, /hold no tensor/, () => putWeights(s.id, encodeSafetensors(mapWeights([], () => tensor([1])))));
    await refused(400, /tensor "w" is F64; Setu aggregates in float32/, () => putWeights(s.id, encodeSafetensors(mapWeights(['w'], () => tensor([1], undefined, 'F64')))));
    await refused(400, /non-finite value \(NaN\)/, () => putWeights(s.id, encodeSafetensors(mapWeights(['w', 'bn.x', 'frozen.y'], () => tensor([1], new Float32Array([NaN]))))));
    await refused(400, /\/tensorRules\/1: "frozen\.\*" matches no tensor/, () => putWeights(s.id, encodeSafetensors(mapWeights(['w', 'bn.x'], () => tensor([1])))));
    await refused(403, /led by someone else/, () => putWeights(s.id, good, otherLead));
    await refused(415, /safetensors file/, () => call('PUT', `/v1/studies/${s.id}/initial-weights`, leadKey, { json: { weights: [] } }));
    const ok = await putWeights(s.id, good);
    assert.equal(ok.status, 200, JSON.stringify(ok.json));
    assert.deepEqual({ tensors: ok.json.tensors, parameters: ok.json.parameters }, { tensors: 7, parameters: 16 });
    await refused(409, /already has its initial weights/, () => putWeights(s.id, good));
    // The study's detail names every tensor with its dtype, shape and rule.
    const d = await statusOf(s.id);
    const byName = Object.fromEntries(d.model.tensors.map((t: any) => [t.name, `${t.dtype}[${t.shape}] ${t.rule}`]));
    assert.deepEqual(byName, Object.fromEntries([
      ['__proto__', 'F32[2] aggregate'], ['constructor', 'F16[2,2] aggregate'], ['toString', 'BF16[3] aggregate'], ['hasOwnProperty', 'F32[2] aggregate'],
      ['bn.running_mean', 'F32[2] local'], ['bn.num_batches_tracked', 'I64[] local'], ['frozen.weight', 'F32[2] skip'],
    ]));
    // An integer tensor aggregated under DP is refused: its change per round would dominate the clipped norm.
    const dp = (await lead('POST', '/v1/studies', study('dp', { tensorRules: [{ match: 'frozen.*', rule: 'skip' }], privacy: { dp: { level: 'client', epsilon: 5, delta: 1e-5, clipNorm: 1 } } }))).json;
    await refused(400, /integer tensor "bn\.num_batches_tracked" would be aggregated under differential privacy/, () => putWeights(dp.id, good));
    // A built-in family takes initial weights of its own layout only.
    const lg = (await lead('POST', '/v1/studies', { ...study('logistic warm start'), model: { kind: 'logistic', inputDim: 3 }, tensorRules: undefined })).json;
    await refused(400, /do not fit the study's logistic model: missing tensor "bias"/, () => putWeights(lg.id, encodeSafetensors(mapWeights(['weight'], () => tensor([1, 3])))));
  });

  let fedavg: string;

  it('refuses to start while a site\'s trainer cannot train a custom model, then starts', async () => {
    fedavg = (await lead('POST', '/v1/studies', study('fedavg'))).json.id;
    assert.equal((await putWeights(fedavg, encodeSafetensors(initial()))).status, 200);
    assert.equal((await call('PUT', '/v1/agent/trainer', sites[0]!.key, { json: EXTERNAL })).status, 200);
    assert.equal((await call('PUT', '/v1/agent/trainer', sites[1]!.key, { json: BUILTIN })).status, 200);
    await refused(409, /site site-b \(built-in\) cannot train a custom model: it needs an external trainer/, () => lead('POST', `/v1/studies/${fedavg}/start`, {}));
    await refused(400, /features\/0/, () => call('PUT', '/v1/agent/trainer', sites[1]!.key, { json: { ...EXTERNAL, features: ['telepathy'] } }));
    assert.equal((await call('PUT', '/v1/agent/trainer', sites[1]!.key, { json: EXTERNAL })).status, 200);
    const r = await lead('POST', `/v1/studies/${fedavg}/start`, {});
    assert.equal(r.status, 200, JSON.stringify(r.json));
  });

  it('FedAvg: updates are checked against the aggregated tensors\' names, shapes and dtypes; the aggregate keeps every name', async () => {
    const ta = await poll(sites[0]!), tb = await poll(sites[1]!);
    // Names in the stored model's order (safetensors sorts them).
    assert.deepEqual(ta.tensorRules, { local: ['bn.num_batches_tracked', 'bn.running_mean'], skip: ['frozen.weight'] });
    const g = await model(sites[0]!, ta.modelVersionId);
    assert.equal(Object.getPrototypeOf(g), null);
    assert.equal(g['constructor']!.dtype, 'F16');
    const upload = (w: Weights, t: TaskMessage, n = 10) => update(w, { taskId: t.taskId, numExamples: n, trainMetrics: { loss: 1 }, evalMetrics: { auroc: 0.5 + n / 100 }, evalExamples: n });
    const url = `/v1/agent/tasks/${ta.taskId}/result`;
    const shifted = (by: number) => mapWeights(AGGREGATED, (k) => ({ ...g[k]!, data: g[k]!.data.map((v) => v + by) }));
    const post = (body: Uint8Array, s = sites[0]!) => call('POST', url, s.key, { body });
    await refused(400, /unexpected tensor "bn\.running_mean"/, () => post(upload(mapWeights([...AGGREGATED, 'bn.running_mean'], (k) => g[k]!), ta)));
    await refused(400, /missing tensor "hasOwnProperty"/, () => post(upload(mapWeights(['__proto__', 'constructor', 'toString'], (k) => g[k]!), ta)));
    await refused(400, /unexpected tensor "valueOf"/, () => post(upload(mapWeights([...AGGREGATED, 'valueOf'], (k) => g[k] ?? tensor([1])), ta)));
    await refused(400, /tensor "constructor" is F32, expected F16/, () => post(upload(mapWeights(AGGREGATED, (k) => (k === 'constructor' ? tensor([2, 2]) : g[k]!)), ta)));
    await refused(400, /tensor "__proto__" has shape \[3\], expected \[2\]/, () => post(upload(mapWeights(AGGREGATED, (k) => (k === '__proto__' ? tensor([3]) : g[k]!)), ta)));
    assert.equal((await post(upload(shifted(1), ta, 10))).status, 200);
    const rb = await call('POST', `/v1/agent/tasks/${tb.taskId}/result`, sites[1]!.key, { body: upload(shifted(3), tb, 30) });
    assert.equal(rb.status, 200, JSON.stringify(rb.json));
    const d = await waitRound(fedavg, 1);
    // (10·(g+1) + 30·(g+3)) / 40 = g + 2.5, rounded to each tensor's dtype; local and skipped tensors unchanged.
    const next = await latest(fedavg);
    assert.equal(Object.getPrototypeOf(next), null);
    assert.deepEqual(Object.keys(next).sort(), Object.keys(g).sort());
    assert.deepEqual([...next['__proto__']!.data], [3.5, 1.5]);
    assert.deepEqual([...next['constructor']!.data], [0.5, -1, 0.25, 2].map((v) => halfToFloat(floatToHalfBits(v + 2.5))));
    assert.equal(next['toString']!.dtype, 'BF16');
    assert.deepEqual([...next['bn.running_mean']!.data], [1, -1]);
    assert.deepEqual([...next['frozen.weight']!.data], [1, -1]);
    // The trainers' own metric (auroc) is aggregated by examples.
    const auroc = d.metrics.find((m: any) => m.round === 0 && m.site === null && m.phase === 'evaluate' && m.name === 'auroc');
    assert.ok(Math.abs(auroc.value - (10 * 0.6 + 30 * 0.8) / 40) < 1e-12, JSON.stringify(auroc));
    assert.equal(({} as Record<string, unknown>).constructor, Object, 'Object.prototype is untouched');
  });

  it('progress lines reach the study lead; bad ones are refused', async () => {
    const ta = await poll(sites[0]!);
    const r = await call('POST', `/v1/agent/tasks/${ta.taskId}/progress`, sites[0]!.key, { json: { step: 3, of: 10, metrics: { loss: 0.42 }, message: 'epoch 1' } });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    const d = await statusOf(fedavg);
    assert.deepEqual(d.openRound.progress.map((p: any) => ({ site: p.site, step: p.step, of: p.of, metrics: p.metrics, message: p.message })), [{ site: 'site-a', step: 3, of: 10, metrics: { loss: 0.42 }, message: 'epoch 1' }]);
    await refused(400, /metrics/, () => call('POST', `/v1/agent/tasks/${ta.taskId}/progress`, sites[0]!.key, { json: { metrics: { __proto__x: 1, 'not a name': 2 } } }));
    await refused(403, /was not given to this site/, () => call('POST', `/v1/agent/tasks/${ta.taskId}/progress`, sites[1]!.key, { json: { step: 1 } }));
  });

  it('Cyclic: the one site\'s model becomes the global model, names intact, and later correct updates are accepted', async () => {
    assert.equal((await lead('POST', `/v1/studies/${fedavg}/stop`, {})).status, 200); // its open tasks expire
    const id = (await lead('POST', '/v1/studies', study('cyclic', { strategy: { name: 'Cyclic' }, rounds: 2, tensorRules: undefined }))).json.id;
    assert.equal((await putWeights(id, encodeSafetensors(initial()))).status, 200);
    assert.equal((await lead('POST', `/v1/studies/${id}/start`, {})).status, 200);
    for (const round of [1, 2]) {
      const task = await waitFor(`the round ${round} task`, async () => {
        for (const s of sites) {
          const t = await call('GET', '/v1/agent/task?waitMs=200', s.key);
          if (t.status === 200 && t.json.studyId === id) return { s, t: t.json as TaskMessage };
        }
        return undefined;
      });
      const g = await model(task.s, task.t.modelVersionId);
      const w = mapWeights(Object.keys(g), (k) => ({ ...g[k]!, data: g[k]!.data.map((v) => v + 1) }));
      const r = await call('POST', `/v1/agent/tasks/${task.t.taskId}/result`, task.s.key, { body: update(w, { taskId: task.t.taskId, numExamples: 5 }) });
      assert.equal(r.status, 200, `round ${round}: ${JSON.stringify(r.json)}`);
      await waitRound(id, round);
      const next = await latest(id);
      assert.deepEqual(Object.keys(next).sort(), Object.keys(initial()).sort());
      assert.deepEqual([...next['__proto__']!.data], [1 + round, -1 + round]);
      assert.deepEqual([...next['bn.num_batches_tracked']!.data], [round]);
    }
  });

  it('refuses at start a private study a site cannot serve, naming the site, the feature and the remedy, and changes nothing; the agent\'s own declaration starts it', async () => {
    // Sample-level DP needs the trainer's own DP-SGD: an external trainer that does not declare it cannot serve it.
    const spec = study('dp-sgd', { rounds: 2, fit: { localSteps: 10, batchSize: 8, optimizer: { kind: 'sgd', lr: 0.1 } }, privacy: { dp: { level: 'sample', epsilon: 5, delta: 1e-5, clipNorm: 1 } } });
    const id = (await lead('POST', '/v1/studies', spec)).json.id;
    assert.equal((await putWeights(id, encodeSafetensors(initial()))).status, 200);
    // What a current agent declares for an external trainer without `features: [dp-sgd]`: DP-FedAvg and SecAgg+, not DP-SGD.
    const agentSays = (features?: ('fedprox' | 'dp-sgd')[]) => trainerDeclaration({ trainer: { kind: 'external', command: ['python3', 'train.py'], ...(features ? { features } : {}) } } as SiteConfig);
    assert.deepEqual(agentSays().features, ['evaluate', 'tensor-rules', 'dp-client', 'secagg']);
    for (const s of sites) assert.equal((await call('PUT', '/v1/agent/trainer', s.key, { json: agentSays() })).status, 200);
    await refused(409, /cannot start: site site-a \(external \(python3 train\.py\)\) does not support dp-sgd, which sample-level DP \(privacy\.dp\.level: sample\) needs: DP-SGD runs inside the training.*trainer\.features: \[dp-sgd\].*; site site-b /,
      () => lead('POST', `/v1/studies/${id}/start`, {}));
    assert.equal((await statusOf(id)).status, 'created', 'still not started');
    // A trainer that runs the agent's DP-SGD plan and says so: the same study starts.
    for (const s of sites) assert.equal((await call('PUT', '/v1/agent/trainer', s.key, { json: agentSays(['dp-sgd']) })).status, 200);
    const r = await lead('POST', `/v1/studies/${id}/start`, {});
    assert.equal(r.status, 200, JSON.stringify(r.json));
    assert.equal((await lead('POST', `/v1/studies/${id}/stop`, {})).status, 200);
  });

  it('F16 transport: tasks name the dtype, F32 tensors arrive as F16 and aggregate in float32 within half-precision rounding; refused with SecAgg+', async () => {
    await refused(400, /\/transport\/updateDtype: SecAgg\+ sends each update masked as integers/, () => lead('POST', '/v1/studies', study('f16 secagg', { transport: { updateDtype: 'F16' }, privacy: { secagg: {} } })));
    for (const s of (await lead('GET', '/v1/studies')).json) if (s.status === 'running') assert.equal((await lead('POST', `/v1/studies/${s.id}/stop`, {})).status, 200);
    // With a norm bound, the update's narrowed values are compared with the F32 global model element by element.
    const id = (await lead('POST', '/v1/studies', study('f16', { transport: { updateDtype: 'F16' }, rounds: 1, maxUpdateNorm: 100 }))).json.id;
    assert.equal((await putWeights(id, encodeSafetensors(initial()))).status, 200);
    assert.equal((await lead('POST', `/v1/studies/${id}/start`, {})).status, 200);
    const tasks = await waitFor('both sites\' f16 tasks', async () => {
      const got = [];
      for (const s of sites) {
        const t = await call('GET', '/v1/agent/task?waitMs=200', s.key);
        if (t.status === 200 && t.json.studyId === id) got.push({ s, t: t.json as TaskMessage });
      }
      return got.length === 2 ? got : undefined;
    });
    const g = await model(sites[0]!, tasks[0]!.t.modelVersionId);
    // A third is no half: each site's F32 values are rounded on the way, the mean is taken in float32 or wider.
    const third = mapWeights(AGGREGATED, (k) => ({ ...g[k]!, data: g[k]!.data.map((v) => v + 1 / 3) }));
    for (const [i, { s, t }] of tasks.entries()) {
      assert.equal(t.updateDtype, 'F16');
      const body = update(i === 0 ? narrowForTransport(third, t.updateDtype) : third, { taskId: t.taskId, numExamples: 10 });
      if (i === 0) assert.equal(decodeSafetensors(body).weights['__proto__']!.dtype, 'F16', 'the upload narrows F32 tensors');
      const r = await call('POST', `/v1/agent/tasks/${t.taskId}/result`, s.key, { body });
      assert.equal(r.status, 200, JSON.stringify(r.json));
    }
    await waitRound(id, 1);
    const next = await latest(id);
    assert.equal(next['__proto__']!.dtype, undefined, 'the model stays F32');
    const want = [1, -1].map((v) => v + 1 / 3), got = [...next['__proto__']!.data];
    for (let i = 0; i < 2; i++) assert.ok(Math.abs(got[i]! - want[i]!) <= Math.abs(want[i]!) * 2 ** -11, `element ${i}: ${got[i]} vs ${want[i]}`);
    assert.notDeepEqual(got, want.map(Math.fround), 'one site\'s values travelled rounded to F16');
  });

  async function waitRound(id: string, round: number): Promise<any> {
    return waitFor(`round ${round} of ${id}`, async () => {
      const d = await statusOf(id);
      if (d.status === 'failed') throw new Error(`study failed: ${d.error}`);
      return d.rounds.some((r: any) => r.round === round && r.status === 'committed') ? d : undefined;
    });
  }
});
