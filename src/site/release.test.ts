/**
 * A retried task releases the same output and costs nothing more: the noise seed per task, the charge per task id,
 * the release kept per round; and the state writes are durable files (fsync is not observable here, the files are).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TaskMessage } from '../protocol/api.js';
import { RESULT_META_KEY } from '../protocol/api.js';
import { SiteState, writeAtomic } from './state.js';
import type { SiteConfig } from './config.js';
import { budgetRefusal, dpPlanOf, loadBudget, privatiseRelease, spendAndPersist, trainPrivately } from './privacy.js';
import { NOISE_SECRET_FILE, keepRelease, releaseLog, releasedFor, taskNoiseSeed, tensorDigest, weightsDigest } from './release.js';
import { createModel } from '../learning/models/registry.js';
import { createRng } from '../learning/rng.js';
import { decodeSafetensors, encodeSafetensors } from '../protocol/safetensors.js';
import type { Dataset } from '../learning/types.js';

const withDir = (fn: (dir: string) => void) => () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-release-'));
  try {
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
};

const task = (over: Partial<TaskMessage> = {}, level: 'sample' | 'client' = 'sample'): TaskMessage => ({
  taskId: 's1.r1.site-a', studyId: 's1', round: 1, kind: 'fit', modelVersionId: 's1.v0', dataset: 'heart', model: { kind: 'logistic', inputDim: 3 },
  fit: { localSteps: 30, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.1 } }, strategy: 'FedAvg', seed: 1, deadlineAt: 0,
  privacy: { dp: level === 'sample' ? { level, epsilon: 1, delta: 1e-3, clipNorm: 1 } : { level, epsilon: 1, delta: 1e-3, clipNorm: 0.5, noiseMultiplier: 1, mode: 'distributed' }, rounds: 3, clientsPerRound: 2, secagg: false },
  ...over,
});
const cfg = { coordinator: 'http://x', datasets: {}, configDir: '.', stateDirAbs: '.' } as unknown as SiteConfig;

function data(n = 60): Dataset {
  const rng = createRng(3, 'data');
  const x = new Float32Array(n * 3), y = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < 3; j++) x[i * 3 + j] = rng.normal();
    y[i] = x[i * 3]! + 0.3 * rng.normal() > 0 ? 1 : 0;
  }
  return { x, n, d: 3, y };
}

test('the noise seed: 32 bytes from the site secret (mode 600, made once) and the task; another task or site, another seed', withDir((dir) => {
  const state = new SiteState(dir);
  const a = taskNoiseSeed(state, 's1', 's1.r1.site-a');
  assert.equal(a.length, 32);
  assert.equal(statSync(join(dir, NOISE_SECRET_FILE)).mode & 0o777, 0o600);
  assert.deepEqual(taskNoiseSeed(new SiteState(dir), 's1', 's1.r1.site-a'), a, 'the same after a restart');
  assert.notDeepEqual(taskNoiseSeed(state, 's1', 's1.r2.site-a'), a, 'the next round draws other noise');
  assert.notDeepEqual(taskNoiseSeed(state, 's2', 's1.r1.site-a'), a, 'another study draws other noise');
  const other = mkdtempSync(join(tmpdir(), 'setu-release-'));
  try {
    assert.notDeepEqual(taskNoiseSeed(new SiteState(other), 's1', 's1.r1.site-a'), a, 'another site (another secret) draws other noise');
  } finally {
    rmSync(other, { recursive: true, force: true });
  }
  writeAtomic(join(dir, NOISE_SECRET_FILE), new Uint8Array(5));
  assert.throws(() => taskNoiseSeed(state, 's1', 'x'), /noise secret must be 32 bytes, found 5/);
}));

for (const level of ['sample', 'client'] as const) {
  test(`${level}-level DP: the same task seed gives the same release, another seed another one`, withDir((dir) => {
    const state = new SiteState(dir);
    const t = task({}, level);
    const model = createModel(t.model);
    const global = model.init(createRng(1, 'init'));
    const d = data();
    const plan = dpPlanOf(t, d.n)!;
    const ordinary = () => ({ weights: Object.fromEntries(Object.entries(global).map(([k, v]) => [k, { ...v, data: v.data.map((x) => x + 0.05) }])), numExamples: d.n, loss: 0.5 });
    // Sample level trains privately; client level privatises the ordinary training's release (as the agent does for every trainer).
    const run = (seed: Uint8Array) => weightsDigest(level === 'sample' ? trainPrivately({ model, global, data: d, task: t, plan, seed }).weights : privatiseRelease(ordinary().weights, global, plan, seed).weights);
    const seed = taskNoiseSeed(state, t.studyId, t.taskId);
    const first = run(seed);
    assert.equal(run(taskNoiseSeed(state, t.studyId, t.taskId)), first, 'a retry releases exactly the same weights');
    assert.notEqual(run(taskNoiseSeed(state, t.studyId, 'another-task')), first, 'the noise is really there');
  }));
}

test('each task id is charged once: a retry after its charge is neither refused nor charged again', withDir((dir) => {
  const state = new SiteState(dir);
  const t = task();
  const plan = dpPlanOf(t, 60)!;
  for (let r = 1; r <= 3; r++) {
    const id = `s1.r${r}.site-a`;
    // Each round is attempted twice, as after a crash between the charge and the queue.
    for (let attempt = 0; attempt < 2; attempt++) {
      const b = loadBudget(state, cfg, t);
      assert.equal(budgetRefusal(b, plan, id), undefined, `round ${r} attempt ${attempt} fits`);
      spendAndPersist(state, t.studyId, b, plan, id);
    }
  }
  const b = loadBudget(state, cfg, t);
  assert.deepEqual(b.records().map((r) => r.label), ['s1.r1.site-a', 's1.r2.site-a', 's1.r3.site-a'], 'one charge per task');
  assert.ok(b.spent() <= 1 && b.spent() > 0.99, `the study's three rounds cost its target exactly (ε=${b.spent()})`);
  assert.ok(budgetRefusal(b, plan, 's1.r4.site-a'), 'a new task past the budget is still refused');
}));

test('a fit result is kept per round: asked again, the same tensors go under the new task id; another global model trains', withDir((dir) => {
  const state = new SiteState(dir);
  const body = (id: string) => encodeSafetensors({ w: { shape: [2], data: new Float32Array([1, 2]) } }, { [RESULT_META_KEY]: JSON.stringify({ taskId: id, numExamples: 5 }) });
  const t1 = task();
  keepRelease(state, t1, { taskId: t1.taskId, studyId: 's1', contentType: 'application/octet-stream', body: body(t1.taskId), commit: [{ name: 'stream.json', data: '{"pos":4}', encoding: 'utf8' }] });
  const same = releasedFor(state, t1)!;
  assert.equal(tensorDigest(same.body), tensorDigest(body(t1.taskId)));
  assert.deepEqual(same.commit, [{ name: 'stream.json', data: '{"pos":4}', encoding: 'utf8' }], 'the commit is the same absolute state: writing it again changes nothing');
  const renamed = releasedFor(state, { ...t1, taskId: 's1.r1.site-a.again' })!;
  assert.equal(renamed.taskId, 's1.r1.site-a.again');
  assert.equal(JSON.parse(decodeSafetensors(renamed.body).metadata[RESULT_META_KEY]!).taskId, 's1.r1.site-a.again', 'the metadata names the task it answers');
  assert.equal(tensorDigest(renamed.body), tensorDigest(same.body));
  assert.equal(releasedFor(state, { ...t1, modelVersionId: 's1.v0-other' }), undefined, 'from another global model the round trains');
  assert.equal(releasedFor(state, { ...t1, round: 2, taskId: 's1.r2.site-a' }), undefined);
  assert.equal(releasedFor(state, { ...t1, kind: 'evaluate' }), undefined);
  // Older rounds are dropped; the log keeps every release.
  for (let r = 2; r <= 4; r++) keepRelease(state, { ...t1, round: r, taskId: `s1.r${r}.site-a` }, { taskId: `s1.r${r}.site-a`, studyId: 's1', contentType: 'application/octet-stream', body: body(`s1.r${r}.site-a`), commit: [] });
  assert.deepEqual(readdirSync(join(state.studyPath('s1'), 'releases')).sort(), ['r3.body', 'r3.json', 'r4.body', 'r4.json']);
  assert.deepEqual(releaseLog(state, 's1').map((l) => l.round), [1, 2, 3, 4]);
  // A damaged release is said, not sent.
  writeAtomic(join(state.studyPath('s1'), 'releases', 'r4.body'), encodeSafetensors({ w: { shape: [2], data: new Float32Array([9, 9]) } }));
  assert.throws(() => releasedFor(state, { ...t1, round: 4, taskId: 's1.r4.site-a' }), /does not match its digest/);
  assert.equal(statSync(join(state.studyPath('s1'), 'releases', 'r3.json')).mode & 0o777, 0o600);
  assert.ok(readFileSync(join(state.studyPath('s1'), 'releases.jsonl'), 'utf8').endsWith('\n'));
}));

test('a pending result keeps its usage until it is acknowledged; clearing it leaves nothing', withDir((dir) => {
  const state = new SiteState(dir);
  const usage = { resourceId: 'site:a', scheduler: 'in-process' as const, cpuSeconds: 1.5, gpuSeconds: 0, wallSeconds: 2, cpuBasis: 'measured' as const };
  state.savePending({ taskId: 't/1', studyId: 's1', contentType: 'application/json', body: new TextEncoder().encode('{}'), commit: [], usage });
  assert.deepEqual(new SiteState(dir).pending()[0]!.usage, usage, 'the usage survives a restart');
  const { usage: _u, ...rest } = state.pending()[0]!;
  state.savePendingMeta(rest);
  assert.equal(state.pending()[0]!.usage, undefined);
  assert.equal(new TextDecoder().decode(state.pendingBody(state.pending()[0]!)), '{}', 'the body is untouched');
  state.clearPending('t/1');
  assert.deepEqual(readdirSync(join(dir, 'pending')), []);
}));
