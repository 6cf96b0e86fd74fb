import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { StudySpec, TrainerDeclaration } from '../protocol/api.js';
import { UNDECLARED, requiredFeatures, trainerProblems } from './trainer-capabilities.js';

const base: StudySpec = { name: 's', dataset: 'd', model: { kind: 'custom', name: 'net' }, strategy: { name: 'FedAvg' }, rounds: 3, fit: { epochs: 1, batchSize: 8, optimizer: { kind: 'sgd', lr: 0.1 } } };
const external: TrainerDeclaration = { kind: 'external', description: 'external (python3 t.py)', models: ['custom'], features: ['evaluate', 'tensor-rules'] };

test('a study names what it asks of every trainer, with why', () => {
  assert.deepEqual(requiredFeatures(base), []);
  const spec: StudySpec = { ...base, strategy: { name: 'fedprox' }, fit: { ...base.fit, proximalMu: 0.1 }, tensorRules: [{ match: 'bn.*', rule: 'local' }],
    privacy: { dp: { level: 'sample', epsilon: 1, delta: 1e-5, clipNorm: 1 }, secagg: {} } };
  assert.deepEqual(requiredFeatures(spec).map((r) => r.feature), ['fedprox', 'dp-sgd', 'secagg', 'tensor-rules']);
  assert.deepEqual(requiredFeatures({ ...base, tensorRules: [{ match: 'x', rule: 'aggregate' }] }), []);
});

test('a site whose trainer cannot serve the study is named with the reason; an undeclared site is the built-in trainer', () => {
  assert.deepEqual(trainerProblems(base, [{ name: 'a', trainer: external }]), []);
  assert.deepEqual(trainerProblems(base, [{ name: 'b', trainer: undefined }]), ['site b (built-in (not declared by the agent)) cannot train a custom model: it needs an external trainer (site.yaml trainer.kind: external)']);
  const dp: StudySpec = { ...base, privacy: { dp: { level: 'sample', epsilon: 1, delta: 1e-5, clipNorm: 1 } } };
  assert.deepEqual(trainerProblems(dp, [{ name: 'a', trainer: external }]), ['site a (external (python3 t.py)) does not support dp-sgd, which sample-level DP (privacy.dp.level: sample) needs']);
  assert.deepEqual(trainerProblems(dp, [{ name: 'a', trainer: { ...external, features: [...external.features, 'dp-sgd'] } }]), []);
  const logistic: StudySpec = { ...base, model: { kind: 'logistic', inputDim: 3 } };
  assert.deepEqual(trainerProblems(logistic, [{ name: 'a', trainer: external }, { name: 'c', trainer: UNDECLARED }]), ['site a (external (python3 t.py)) does not train the logistic model (it trains: custom)']);
});
