/**
 * Every strategy that needs only weights works on any tensor set: names a PyTorch state_dict uses (dots, digits),
 * names that are Object.prototype keys, F16/BF16 tensors and integer buffers. The aggregate keeps each tensor's
 * name, shape and dtype, and nothing lands on a prototype.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { layoutOf, mapWeights, tensor, type DType, type Weights } from '../../protocol/tensors.js';
import { STRATEGY_NAMES, createStrategy, strategyNeeds } from './registry.js';
import type { FitResult } from '../strategy.js';

const NAMES: [string, number[], DType][] = [
  ['__proto__', [2], 'F32'],
  ['constructor', [2, 2], 'F16'],
  ['toString', [3], 'BF16'],
  ['hasOwnProperty', [1], 'F32'],
  ['features.0.weight', [2, 3], 'F32'],
  ['bn.num_batches_tracked', [], 'I64'],
];

function model(offset: number): Weights {
  return mapWeights(NAMES.map((n) => n[0]), (k) => {
    const [, shape, dtype] = NAMES.find((n) => n[0] === k)!;
    const size = shape.reduce((a, b) => a * b, 1);
    return tensor(shape, Float32Array.from({ length: size }, (_, i) => (dtype === 'I64' ? 10 + offset : 0.25 * i + offset)), dtype);
  });
}

test('every weights-only strategy aggregates a tensor set with prototype-key names, F16/BF16 and integer buffers', () => {
  const weightsOnly = STRATEGY_NAMES.filter((n) => strategyNeeds(n).length === 0);
  assert.deepEqual(STRATEGY_NAMES.filter((n) => !weightsOnly.includes(n)).sort(), ['FedProx', 'SCAFFOLD']);
  for (const name of [...weightsOnly, 'FedProx']) {
    const params = name === 'Krum' || name === 'MultiKrum' ? { byzantine: 0 } : name === 'TrimmedMean' ? { beta: 0.2 } : {};
    const s = createStrategy(name, params);
    const global = model(0);
    const sites = ['a', 'b', 'c', 'd', 'e'];
    const tasks = s.configureFit(1, global, sites);
    const results: FitResult[] = tasks.map((t, i) => ({ siteId: t.siteId, weights: model(i + 1), numExamples: 10 + i }));
    const out = s.aggregateFit(1, global, results);
    assert.equal(Object.getPrototypeOf(out.weights), null, name);
    assert.deepEqual({ ...layoutOf(out.weights) }, { ...layoutOf(global) }, `${name} keeps names, shapes and dtypes`);
    for (const [k] of NAMES) assert.ok(Object.hasOwn(out.weights, k) && out.weights[k]!.data.every(Number.isFinite), `${name}: ${k}`);
    // The state round-trips too (server moments are named after the tensors).
    const st = s.getState();
    createStrategy(name, params).setState(st);
  }
  assert.equal(({} as Record<string, unknown>).toString, Object.prototype.toString);
});

test('strategies that need more than weights from the site say what', () => {
  assert.deepEqual(strategyNeeds('SCAFFOLD'), ['scaffold']);
  assert.deepEqual(strategyNeeds('fedprox'), ['fedprox']);
  assert.deepEqual(strategyNeeds('FedAvg'), []);
  assert.throws(() => strategyNeeds('FedMagic'), /unknown strategy/);
});
