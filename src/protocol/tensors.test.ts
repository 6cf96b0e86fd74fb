import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cloneWeights, layoutDifference, layoutOf, mapWeights, pickWeights, resolveTensorRules, tensor, zerosLike } from './tensors.js';

test('tensor rules: first match wins, * spans dots, unmatched tensors are aggregated', () => {
  const names = ['features.0.weight', 'features.1.running_mean', 'features.1.num_batches_tracked', 'head.weight', 'head.bias', 'a+b(c)'];
  const r = resolveTensorRules(names, [
    { match: 'head.bias', rule: 'skip' },
    { match: 'head.*', rule: 'local' },
    { match: 'features.*.running_*', rule: 'local' },
    { match: '*num_batches_tracked', rule: 'skip' },
    { match: 'a+b(c)', rule: 'aggregate' }, // regex characters are literal
  ]);
  assert.deepEqual(r, {
    aggregate: ['features.0.weight', 'a+b(c)'],
    local: ['features.1.running_mean', 'head.weight'],
    skip: ['features.1.num_batches_tracked', 'head.bias'],
  });
  assert.deepEqual(resolveTensorRules(['w']), { aggregate: ['w'], local: [], skip: [] });
});

test('tensor rules refuse a pattern matching nothing and a model with nothing to aggregate', () => {
  assert.throws(() => resolveTensorRules(['w', 'b'], [{ match: 'bn.*', rule: 'local' }]), /\/tensorRules\/0: "bn\.\*" matches no tensor of the model \(it has 2: w, b\)/);
  assert.throws(() => resolveTensorRules(['w', 'b'], [{ match: '*', rule: 'local' }]), /at least one must be aggregated/);
  assert.throws(() => resolveTensorRules(['w'], [{ match: 'w', rule: 'skip' }, { match: 'w', rule: 'local' }]), /\/tensorRules\/1: "w" matches no tensor/, 'a rule shadowed by an earlier one matches nothing');
});

test('weights helpers keep dtypes and build null-prototype objects', () => {
  const w = mapWeights(['__proto__', 'x'], (k) => tensor([2], new Float32Array([1, 2]), k === 'x' ? 'BF16' : undefined));
  for (const c of [cloneWeights(w), zerosLike(w), pickWeights(w, ['x', '__proto__'])]) {
    assert.equal(Object.getPrototypeOf(c), null);
    assert.equal(layoutDifference(layoutOf(c), layoutOf(w)), null);
  }
  assert.deepEqual(Object.keys(pickWeights(w, ['x', '__proto__'])), ['x', '__proto__']);
  assert.throws(() => pickWeights(w, ['constructor']), /missing tensor "constructor"/);
  assert.equal(layoutDifference(layoutOf(w), layoutOf(mapWeights(['__proto__', 'x'], () => tensor([2])))), 'tensor "x" is BF16, expected F32');
});
