/** The coordinator's checks of a study's privacy block, the task's privacy, and client-level aggregation. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { StudySpec } from '../protocol/api.js';
import { aggregateClientLevel, aggregateClientLevelSum, clientNoiseMultiplier, privacyProblems, spendProblem, taskPrivacy } from './privacy.js';
import { epsilonFor } from '../privacy/rdp.js';

const base: StudySpec = {
  name: 's', dataset: 'heart', model: { kind: 'logistic', inputDim: 2 }, strategy: { name: 'FedAvg' }, rounds: 10,
  fit: { localSteps: 50, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.01 } },
};
const withPrivacy = (privacy: StudySpec['privacy'], over: Partial<StudySpec> = {}): StudySpec => ({ ...base, ...over, privacy });

test('privacy blocks that the schema cannot judge are refused with the field named', () => {
  assert.deepEqual(privacyProblems(base), []);
  assert.deepEqual(privacyProblems(withPrivacy({ dp: { level: 'sample', epsilon: 1, delta: 1e-5, clipNorm: 1 }, secagg: {} })), []);
  assert.deepEqual(privacyProblems(withPrivacy({ dp: { level: 'client', epsilon: 1, delta: 1e-5, clipNorm: 0.1, mode: 'distributed' }, secagg: {} })), []);
  const one = (p: StudySpec['privacy'], over: Partial<StudySpec> = {}) => privacyProblems(withPrivacy(p, over)).join(' | ');
  assert.match(one({ dp: { level: 'sample', epsilon: 1, delta: 1e-5, clipNorm: 1, mode: 'central' } }), /^\/privacy\/dp\/mode/);
  assert.match(one({ dp: { level: 'sample', epsilon: 1, delta: 1e-5, clipNorm: 1 } }, { fit: { epochs: 2, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.1 } } }), /^\/fit\/localSteps/);
  assert.match(one({ dp: { level: 'sample', epsilon: 1, delta: 1e-5, clipNorm: 1 } }, { fit: { localSteps: 5, batchSize: 4, optimizer: { kind: 'adam', lr: 0.1 } } }), /^\/fit\/optimizer\/kind/);
  assert.match(one({ dp: { level: 'client', epsilon: 1, delta: 1e-5, clipNorm: 1 } }, { strategy: { name: 'FedAdam' } }), /^\/strategy\/name: client-level/);
  assert.match(one({ dp: { level: 'client', epsilon: 1, delta: 1e-5, clipNorm: 1, mode: 'distributed' } }), /secure aggregation/);
  assert.match(one({ secagg: {} }, { strategy: { name: 'Krum' } }), /^\/strategy\/name: Krum needs every update/);
  assert.match(one({ secagg: { degree: 4, threshold: 2 } }), /threshold: must exceed half the degree/);
  assert.match(one({ secagg: { degree: 4 } }), /give degree and threshold together/);
  assert.match(one({ secagg: {} }, { sites: ['a', 'b'] }), /at least 3 sites/);
});

test('client-level DP: σ keeps the study within its target; the task carries it; aggregation clips, noises and divides by m', () => {
  const spec = withPrivacy({ dp: { level: 'client', epsilon: 2, delta: 1e-5, clipNorm: 0.5 } });
  const sigma = clientNoiseMultiplier(spec);
  assert.ok(epsilonFor(sigma, 1e-5, 1, 10) <= 2 && epsilonFor(sigma * 0.99, 1e-5, 1, 10) > 2, `σ=${sigma} is the smallest that fits`);
  const tp = taskPrivacy(spec, 4)!;
  assert.equal(tp.dp!.noiseMultiplier, sigma);
  assert.equal(tp.dp!.mode, 'central');
  assert.deepEqual({ rounds: tp.rounds, clientsPerRound: tp.clientsPerRound, secagg: tp.secagg }, { rounds: 10, clientsPerRound: 4, secagg: false });
  assert.equal(taskPrivacy(base, 4), undefined);

  // No noise (σ given as 0): central aggregation is exactly global + Σ clip(Δ) / m, with m the sites asked.
  const quiet = withPrivacy({ dp: { level: 'client', epsilon: 2, delta: 1e-5, clipNorm: 0.5, noiseMultiplier: 0 } });
  const g = { w: { shape: [2], data: new Float32Array([1, 1]) } };
  const big = { w: { shape: [2], data: new Float32Array([3, 0]) } }; // norm 3 → clipped to 0.5
  const small = { w: { shape: [2], data: new Float32Array([0, 0.2]) } };
  const out = aggregateClientLevel(quiet, g, [big, small], 4);
  assert.ok(Math.abs(out['w']!.data[0]! - (1 + 0.5 / 4)) < 1e-6 && Math.abs(out['w']!.data[1]! - (1 + 0.2 / 4)) < 1e-6, `${out['w']!.data}`);
  // From a SecAgg+ sum the sum is not clipped again (it is many sites' worth).
  const fromSum = aggregateClientLevelSum(quiet, g, { w: { shape: [2], data: new Float32Array([0.5, 0.2]) } }, 4);
  assert.deepEqual([...fromSum['w']!.data].map((v) => +v.toFixed(6)), [1.125, 1.05]);
  // With noise the result moves by about σC/m.
  const noisy = aggregateClientLevelSum(spec, g, { w: { shape: [2], data: new Float32Array([0, 0]) } }, 4);
  assert.ok([...noisy['w']!.data].some((v) => v !== 1), 'central noise was added');
});

test('a DP study requires a matching spend report within the site\'s own budget', () => {
  const spec = withPrivacy({ dp: { level: 'sample', epsilon: 1, delta: 1e-5, clipNorm: 1 } });
  const ok = { mechanism: 'dp-sgd' as const, sampleRate: 0.02, noiseMultiplier: 2, steps: 50, epsilon: 0.3, delta: 1e-5, budgetEpsilon: 1, budgetDelta: 1e-5 };
  assert.equal(spendProblem(spec, ok), undefined);
  assert.match(spendProblem(spec, undefined)!, /must report its privacy spend/);
  assert.match(spendProblem(spec, { ...ok, mechanism: 'dp-fedavg' })!, /asks for dp-sgd/);
  assert.match(spendProblem(spec, { ...ok, epsilon: 1.2 })!, /exceeds the site's own budget/);
  assert.equal(spendProblem(base, undefined), undefined);
});
