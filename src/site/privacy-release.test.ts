/**
 * The agent's side of privacy for every trainer (privacy.ts): client-level DP applied to any trainer's release over
 * an arbitrary tensor set (only the aggregated tensors, F16/BF16 kept, integer tensors refused), and an external
 * trainer's own DP-SGD charged to the site's account from what it declares.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TaskMessage } from '../protocol/api.js';
import { mapWeights, tensor, type Weights } from '../protocol/tensors.js';
import { decodeSafetensors, encodeSafetensors } from '../protocol/safetensors.js';
import { l2Norm } from '../privacy/clip.js';
import { epsilonFor } from '../privacy/rdp.js';
import { createRng } from '../learning/rng.js';
import { SiteState } from './state.js';
import type { SiteConfig } from './config.js';
import { LOCAL_TENSORS_FILE, releaseOf } from './tensor-rules.js';
import { declaredPlan, declaredRefusal, dpPlanOf, dpSgdPlanOf, loadBudget, privatiseRelease, spendAndPersist } from './privacy.js';
import { taskNoiseSeed } from './release.js';

type Dp = NonNullable<NonNullable<TaskMessage['privacy']>['dp']>;
const task = (dp: Dp, rules?: TaskMessage['tensorRules'], clientsPerRound = 4): TaskMessage => ({
  taskId: 's1.r1.site-a', studyId: 's1', round: 1, kind: 'fit', modelVersionId: 's1.v0', dataset: 'images', model: { kind: 'custom', name: 'net' },
  fit: { localSteps: 50, batchSize: 8, optimizer: { kind: 'sgd', lr: 0.1 } }, strategy: 'FedAvg', seed: 1, deadlineAt: 0,
  ...(rules ? { tensorRules: rules } : {}), privacy: { dp, rounds: 4, clientsPerRound, secagg: true },
});
const cfg = (privacy?: SiteConfig['privacy']) => ({ coordinator: 'http://x', datasets: {}, configDir: '.', stateDirAbs: '.', ...(privacy ? { privacy } : {}) }) as unknown as SiteConfig;
const withState = (fn: (s: SiteState) => void) => () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-privrel-'));
  try {
    fn(new SiteState(dir));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
};

/** A model of no built-in family: odd names, F16 and BF16 tensors, a local BatchNorm pair and a skipped layer. */
function model(size = 1): Weights {
  const rng = createRng(7, 'model');
  const t = (shape: number[], dtype?: 'F16' | 'BF16' | 'I64') => tensor(shape, Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => (dtype === 'I64' ? 3 : Math.round(rng.normal() * 64) / 64)), dtype);
  return mapWeights(['__proto__', 'conv.weight', 'head.bias', 'bn.running_mean', 'bn.num_batches_tracked', 'frozen.weight'], (k) => ({
    '__proto__': () => t([4 * size]), 'conv.weight': () => t([8 * size, 3], 'F16'), 'head.bias': () => t([5 * size], 'BF16'),
    'bn.running_mean': () => t([4]), 'bn.num_batches_tracked': () => t([], 'I64'), 'frozen.weight': () => t([6]),
  })[k]!());
}
const RULES = { local: ['bn.num_batches_tracked', 'bn.running_mean'], skip: ['frozen.weight'] };
const shifted = (w: Weights, by: (k: string, i: number) => number) => mapWeights(Object.keys(w), (k) => ({ ...w[k]!, data: w[k]!.data.map((v, i) => v + by(k, i)) }));
const minus = (a: Weights, b: Weights) => mapWeights(Object.keys(a), (k) => ({ ...a[k]!, data: a[k]!.data.map((v, i) => v - b[k]!.data[i]!) }));

test('client-level DP on an arbitrary tensor set: only the aggregated tensors are clipped to C, local and skipped ones untouched, dtypes kept', withState((state) => {
  const global = model();
  const t = task({ level: 'client', epsilon: 5, delta: 1e-5, clipNorm: 0.5, noiseMultiplier: 1, mode: 'central' }, RULES);
  const plan = dpPlanOf(t, 100)!;
  // The trainer moved every tensor far (the counter by 10 batches): a norm of about 10 before clipping.
  const trained = shifted(global, (k) => (k === 'bn.num_batches_tracked' ? 10 : 1));
  const release = releaseOf(trained, global, t.tensorRules);
  assert.deepEqual(Object.keys(release.upload), ['__proto__', 'conv.weight', 'head.bias']);
  const out = privatiseRelease(release.upload, global, plan, taskNoiseSeed(state, t.studyId, t.taskId));
  assert.ok(out.norm > 5, `pre-clip norm ${out.norm}`);
  const delta = minus(out.weights, mapWeights(Object.keys(out.weights), (k) => global[k]!));
  const norm = l2Norm(delta);
  assert.ok(norm <= 0.5 && norm > 0.4999, `central mode: ‖Δ‖ = ${norm} is C, no noise at the site`);
  // Every coordinate scaled alike: the direction is the trainer's.
  for (const k of Object.keys(delta)) for (const v of delta[k]!.data) assert.ok(Math.abs(v - delta['__proto__']!.data[0]!) < 1e-6);
  assert.equal(out.weights['conv.weight']!.dtype, 'F16');
  assert.equal(out.weights['head.bias']!.dtype, 'BF16');
  assert.equal(Object.getPrototypeOf(out.weights), null);
  // Local tensors keep the trainer's values (committed, never released); the skipped one is not in the release.
  const local = decodeSafetensors(Buffer.from(release.commit.find((c) => c.name === LOCAL_TENSORS_FILE)!.data, 'base64')).weights;
  assert.deepEqual([...local['bn.num_batches_tracked']!.data], [13]);
  assert.deepEqual([...local['bn.running_mean']!.data], [...trained['bn.running_mean']!.data]);
  // The release encodes in the tensors' own dtypes (F16/BF16 rounding after the clip is post-processing).
  const wire = decodeSafetensors(encodeSafetensors(out.weights)).weights;
  assert.equal(wire['conv.weight']!.dtype, 'F16');
  assert.equal(wire['head.bias']!.dtype, 'BF16');
  // An update under the clip norm is released as it is.
  const small = releaseOf(shifted(global, () => 0.01), global, t.tensorRules).upload;
  const kept = privatiseRelease(small, global, plan, taskNoiseSeed(state, t.studyId, t.taskId));
  assert.ok(kept.norm < 0.5);
  for (const k of Object.keys(small)) assert.deepEqual([...kept.weights[k]!.data], [...small[k]!.data].map((v, i) => Math.fround(global[k]!.data[i]! + Math.fround(v - global[k]!.data[i]!))));
}));

test('distributed mode: the site adds N(0, σ²C²/n) from the task seed; a retry releases the same bytes, another task other noise', withState((state) => {
  const global = model(400); // about 6,800 aggregated values
  const t = task({ level: 'client', epsilon: 5, delta: 1e-5, clipNorm: 2, noiseMultiplier: 1.5, mode: 'distributed' }, RULES, 9);
  const plan = dpPlanOf(t, 100)!;
  const upload = releaseOf(shifted(global, () => 0), global, t.tensorRules).upload;
  const run = (taskId: string) => privatiseRelease(upload, global, plan, taskNoiseSeed(state, t.studyId, taskId)).weights;
  const noise = minus(run(t.taskId), mapWeights(Object.keys(upload), (k) => global[k]!));
  // Moments of the noise on the float32 tensor only (F16/BF16 values are held in float32 until encoded, so the same holds there).
  const all = Object.values(noise).flatMap((x) => [...x.data]);
  const n = all.length, mean = all.reduce((a, b) => a + b, 0) / n, sd = Math.sqrt(all.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1));
  const want = (1.5 * 2) / Math.sqrt(9);
  assert.ok(Math.abs(mean) < 4 * want / Math.sqrt(n), `mean ${mean}`);
  assert.ok(Math.abs(sd / want - 1) < 0.05, `sd ${sd}, want σC/√n = ${want} (n = ${n} values)`);
  assert.deepEqual(encodeSafetensors(run(t.taskId)), encodeSafetensors(run(t.taskId)), 'a retried task releases exactly the same output');
  assert.notDeepEqual(encodeSafetensors(run('s1.r2.site-a')), encodeSafetensors(run(t.taskId)), 'another task draws other noise');
  // Local and skipped tensors carry no noise: they are not in the release at all.
  assert.deepEqual(Object.keys(noise).sort(), ['__proto__', 'conv.weight', 'head.bias']);
}));

test('an integer tensor in a client-level DP release is refused with its name (the coordinator refuses such a study when its weights are uploaded)', withState((state) => {
  const global = model();
  const t = task({ level: 'client', epsilon: 5, delta: 1e-5, clipNorm: 1, noiseMultiplier: 1, mode: 'central' }, { local: ['bn.running_mean'], skip: [] });
  const upload = releaseOf(global, global, t.tensorRules).upload;
  assert.throws(() => privatiseRelease(upload, global, dpPlanOf(t, 100)!, taskNoiseSeed(state, t.studyId, t.taskId)),
    /integer tensor "bn\.num_batches_tracked" \(I64\) would be aggregated under differential privacy; the study must mark it local or skip/);
}));

test('an external trainer\'s own DP-SGD: the plan it is handed, the ledger charged from its declaration once, a spend over the plan or the budget refused', withState((state) => {
  const t = task({ level: 'sample', epsilon: 2, delta: 1e-5, clipNorm: 1 });
  const planned = dpPlanOf(t, 400)!;
  assert.equal(planned.mechanism, 'dp-sgd');
  const seed = taskNoiseSeed(state, t.studyId, t.taskId);
  const handed = dpSgdPlanOf(planned, seed);
  assert.deepEqual({ ...handed, seed: handed.seed.length }, { clipNorm: 1, noiseMultiplier: planned.plan.noiseMultiplier, sampleRate: 8 / 400, steps: 50, seed: 64 });
  // The trainer stopped early: 30 of its 50 steps, with more noise than asked. The account holds those figures.
  const did = declaredPlan(planned, { noiseMultiplier: planned.plan.noiseMultiplier * 1.1, sampleRate: 8 / 400, steps: 30 });
  const budget = loadBudget(state, cfg(), t);
  assert.equal(declaredRefusal(budget, planned, did, t.taskId), undefined);
  const spend = spendAndPersist(state, t.studyId, budget, did, t.taskId);
  assert.equal(spend.steps, 30);
  assert.equal(spend.noiseMultiplier, planned.plan.noiseMultiplier * 1.1);
  const eps = epsilonFor(planned.plan.noiseMultiplier * 1.1, 1e-5, 8 / 400, 30);
  assert.ok(Math.abs(spend.epsilon - eps) < 1e-3 * eps, `charged ε ${spend.epsilon}, the accountant's for the declaration ${eps}`);
  const saved = loadBudget(state, cfg(), t);
  assert.deepEqual(saved.records().map((r) => [r.label, r.steps, r.sampleRate]), [[t.taskId, 30, 0.02]]);
  // The same task again (an attempt killed after its charge): not charged twice.
  spendAndPersist(state, t.studyId, saved, did, t.taskId);
  assert.equal(loadBudget(state, cfg(), t).records().length, 1);
  // Less private than the plan: refused with the numbers.
  const greedy = declaredPlan(planned, { noiseMultiplier: planned.plan.noiseMultiplier / 2, sampleRate: 8 / 400, steps: 50 });
  assert.match(declaredRefusal(saved, planned, greedy, 's1.r2.site-a')!, /declared DP-SGD with σ=[\d.]+, q=0\.02, 50 steps, less private than the study's plan/);
  // Within the plan but over what this site has left (its own cap, lower than the study's): refused, the account unchanged.
  const tight = loadBudget(state, cfg({ budget: { epsilon: spend.epsilon * 1.05, delta: 1e-5 } }), t);
  assert.match(declaredRefusal(tight, planned, did, 's1.r2.site-a')!, /privacy budget: this task \(dp-sgd, σ=[\d.]+, q=0\.0200, 30 steps\) would bring the study's ε to [\d.]+, over this site's budget/);
  assert.equal(loadBudget(state, cfg(), t).records().length, 1);
}));
