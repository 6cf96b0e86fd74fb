import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createStrategy } from './registry.js';
import type { FitResult } from '../strategy.js';
import type { Weights } from '../../protocol/tensors.js';

const V = (...a: number[]): Weights => ({ p: { shape: [a.length], data: new Float32Array(a) } });
const R = (id: string, ...a: number[]): FitResult => ({ siteId: id, weights: V(...a), numExamples: 10 });
const g = V(0, 0);

test('coordinate-wise median, odd and even counts', () => {
  const odd = createStrategy('Median').aggregateFit(1, g, [R('a', 1, 10), R('b', 2, -5), R('c', 1000, 0)]);
  assert.deepEqual([...odd.weights['p']!.data], [2, 0]);
  const even = createStrategy('Median').aggregateFit(1, g, [R('a', 1, 10), R('b', 2, -5), R('c', 1000, 0), R('d', 3, 1)]);
  assert.deepEqual([...even.weights['p']!.data], [2.5, 0.5]);
});

test('trimmed mean drops floor(beta k) values at each end', () => {
  const rs = [R('a', 1), R('b', 2), R('c', 3), R('d', 4), R('e', 1000)];
  assert.deepEqual([...createStrategy('TrimmedMean', { beta: 0.2 }).aggregateFit(1, V(0), rs).weights['p']!.data], [3]);
  assert.deepEqual([...createStrategy('TrimmedMean', { beta: 0 }).aggregateFit(1, V(0), rs).weights['p']!.data], [202]);
});

test('Krum picks an honest update; Multi-Krum averages the honest ones', () => {
  const honest = [R('a', 1, 1), R('b', 1.1, 0.9), R('c', 0.9, 1.1), R('d', 1.05, 1), R('e', 0.95, 1)];
  const hostile = R('z', 100, -100);
  const k = createStrategy('Krum', { byzantine: 1 }).aggregateFit(1, g, [hostile, ...honest]).weights['p']!.data;
  assert.ok(Math.abs(k[0]! - 1) < 0.2 && Math.abs(k[1]! - 1) < 0.2, `${k}`);
  const mk = createStrategy('MultiKrum', { byzantine: 1 }).aggregateFit(1, g, [hostile, ...honest]).weights['p']!.data;
  assert.ok(Math.abs(mk[0]! - 1) < 1e-6 && Math.abs(mk[1]! - 1) < 1e-6, `${mk}`);
  assert.throws(() => createStrategy('Krum', { byzantine: 2 }).aggregateFit(1, g, honest), /need at least 7/);
});

test('robust strategies are order independent', () => {
  const rs = [R('a', 1, 5), R('b', 2, 3), R('c', 9, 1), R('d', 4, 4), R('e', 0, 2)];
  for (const name of ['Median', 'TrimmedMean', 'Krum', 'MultiKrum']) {
    const a = createStrategy(name).aggregateFit(1, g, rs).weights;
    const agg = createStrategy(name).begin(1, g);
    for (const r of [...rs].reverse()) agg.add(r);
    assert.deepEqual(agg.finish().weights, a, name);
  }
});

test('Cyclic: one site per round, each cycle a seeded permutation; the result becomes the model', () => {
  const s = createStrategy('Cyclic', { seed: 42 });
  const sites = ['h0', 'h1', 'h2', 'h3'];
  const order = Array.from({ length: 8 }, (_, r) => s.configureFit(r + 1, g, sites));
  assert.ok(order.every((t) => t.length === 1));
  const ids = order.map((t) => t[0]!.siteId);
  assert.deepEqual([...ids.slice(0, 4)].sort(), sites);
  assert.deepEqual([...ids.slice(4, 8)].sort(), sites);
  assert.deepEqual(ids, Array.from({ length: 8 }, (_, r) => createStrategy('Cyclic', { seed: 42 }).configureFit(r + 1, g, [...sites].reverse())[0]!.siteId));
  const det = createStrategy('Cyclic', { deterministic: true });
  assert.deepEqual([1, 2, 3, 4, 5].map((r) => det.configureFit(r, g, sites)[0]!.siteId), ['h0', 'h1', 'h2', 'h3', 'h0']);
  assert.deepEqual([...s.aggregateFit(1, g, [R('h2', 7, 8)]).weights['p']!.data], [7, 8]);
  assert.throws(() => s.aggregateFit(1, g, [R('h2', 7, 8), R('h1', 1, 1)]), /exactly one result/);
});
