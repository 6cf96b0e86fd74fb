/** checkValue's problems name the field and say what is allowed: never TypeBox's bare "Expected union value". */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StudySpecSchema, checkValue } from './api.js';

const base = { name: 'h', dataset: 'heart', model: { kind: 'logistic', inputDim: 13 }, strategy: { name: 'FedAvg' }, rounds: 1, fit: { localSteps: 1, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.1 } } };
const check = (o: Record<string, unknown>) => checkValue(StudySpecSchema, { ...base, ...o });

test('a literal union lists its values and what was given', () => {
  assert.deepEqual(check({ fit: { ...base.fit, optimizer: { kind: 'sgdd', lr: 0.1 } } }), ['/fit/optimizer/kind: must be one of sgd, adam, got "sgdd"']);
  assert.deepEqual(check({ privacy: { dp: { level: 'row', epsilon: 1, delta: 1e-3, clipNorm: 1 } } }), ['/privacy/dp/level: must be one of sample, client, got "row"']);
});

test('objects told apart by kind: an unknown kind lists the kinds, a known one reports its own fields', () => {
  assert.deepEqual(check({ model: { kind: 'linear', inputDim: 13 } }), ['/model/kind: must be one of logistic, mlp, cox, custom, got "linear"']);
  assert.deepEqual(check({ model: { kind: 'mlp', inputDim: 13, hidden: [8] } }), ['/model/activation: is required']);
  assert.deepEqual(check({ model: { kind: 'mlp', inputDim: 13, hidden: [8], activation: 'relu', drop: 0.1 } }), ['/model/drop: unknown field (allowed here: kind, inputDim, hidden, activation, dropout)']);
});

test('an unknown field lists the fields of its object; a valid spec has no problems', () => {
  const [colour, ...more] = check({ colour: 'blue' });
  assert.deepEqual(more, []);
  assert.match(colour!, /^\/colour: unknown field \(allowed here: name, description, dataset, model, strategy, rounds, fit, .*privacy.*\)$/);
  assert.deepEqual(check({}), []);
  for (const p of [...check({ model: { kind: 'x' } }), ...check({ fit: { ...base.fit, optimizer: { kind: 1, lr: 1 } } })]) assert.doesNotMatch(p, /Expected union value/);
});
