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
  assert.equal(trainerProblems(dp, [{ name: 'a', trainer: external }]).length, 1);
  assert.match(trainerProblems(dp, [{ name: 'a', trainer: external }])[0]!, /^site a \(external \(python3 t\.py\)\) does not support dp-sgd, which sample-level DP \(privacy\.dp\.level: sample\) needs: DP-SGD runs inside the training, so the trainer must .*trainer\.features: \[dp-sgd\].*client-level DP \(privacy\.dp\.level: client\), which the agent applies around any trainer$/);
  assert.deepEqual(trainerProblems(dp, [{ name: 'a', trainer: { ...external, features: [...external.features, 'dp-sgd'] } }]), []);
  // Client-level DP and SecAgg+ are the agent's: a current agent declares them for every trainer; an older one is told to upgrade.
  const client: StudySpec = { ...base, privacy: { dp: { level: 'client', epsilon: 5, delta: 1e-5, clipNorm: 1 }, secagg: {} } };
  assert.deepEqual(trainerProblems(client, [{ name: 'a', trainer: { ...external, features: [...external.features, 'dp-client', 'secagg'] } }]), []);
  assert.deepEqual(trainerProblems(client, [{ name: 'a', trainer: external }]),
    ['site a (external (python3 t.py)) does not support dp-client, which client-level DP (privacy.dp.level: client) needs: the site\'s agent does not apply it around its trainer (an agent older than agent-side privacy for every trainer: upgrade it)',
      'site a (external (python3 t.py)) does not support secagg, which SecAgg+ (privacy.secagg) needs: the site\'s agent does not apply it around its trainer (an agent older than agent-side privacy for every trainer: upgrade it)']);
  const placed: TrainerDeclaration = { kind: 'placed', description: 'built-in, placed on shared compute', models: ['logistic'], features: ['evaluate', 'dp-client', 'secagg'] };
  const sampleLogistic: StudySpec = { ...dp, model: { kind: 'logistic', inputDim: 3 } };
  assert.match(trainerProblems(sampleLogistic, [{ name: 'p', trainer: placed }])[0]!, /does not support dp-sgd.*: a placed job does not run DP-SGD; client-level DP/);
  const logistic: StudySpec = { ...base, model: { kind: 'logistic', inputDim: 3 } };
  assert.deepEqual(trainerProblems(logistic, [{ name: 'a', trainer: external }, { name: 'c', trainer: UNDECLARED }]), ['site a (external (python3 t.py)) does not train the logistic model (it trains: custom)']);
});
