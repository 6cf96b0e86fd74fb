import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createStrategy } from './registry.js';
import type { FitResult } from '../strategy.js';
import type { Weights } from '../../protocol/tensors.js';
import { createRng } from '../rng.js';

const W = (a: number[], b: number): Weights => ({ weight: { shape: [1, a.length], data: new Float32Array(a) }, bias: { shape: [1], data: new Float32Array([b]) } });
const x0 = W([0, 0], 0);

test('FedAvg: example-weighted mean by hand', () => {
  const s = createStrategy('FedAvg');
  const out = s.aggregateFit(1, x0, [
    { siteId: 'a', weights: W([1, 2], 3), numExamples: 1 },
    { siteId: 'b', weights: W([4, 5], 6), numExamples: 3 },
  ]);
  assert.deepEqual([...out.weights['weight']!.data], [(1 + 12) / 4, (2 + 15) / 4]);
  assert.deepEqual([...out.weights['bias']!.data], [(3 + 18) / 4]);
  assert.equal(out.metrics['examples'], 4);
});

test('FedAvg: equal weighting ignores example counts', () => {
  const s = createStrategy('FedAvg', { weighting: 'equal' });
  const out = s.aggregateFit(1, x0, [
    { siteId: 'a', weights: W([1, 2], 3), numExamples: 1 },
    { siteId: 'b', weights: W([4, 5], 6), numExamples: 3 },
  ]);
  assert.deepEqual([...out.weights['weight']!.data], [2.5, 3.5]);
});

function randomResults(k: number, d: number, seed: number): FitResult[] {
  const r = createRng(seed);
  return Array.from({ length: k }, (_, i) => {
    const a = Array.from({ length: d }, () => r.normal() * 10 ** (r.nextInt(6) - 3));
    return { siteId: `site-${String(i).padStart(3, '0')}`, weights: W(a, r.normal()), numExamples: 1 + r.nextInt(500), loss: r.next() };
  });
}

test('any arrival order gives bit-identical results (batch sorts by site id)', () => {
  const rs = randomResults(25, 50, 3), g = W(new Array(50).fill(0), 0);
  const ref = createStrategy('FedAvg').aggregateFit(1, g, rs).weights;
  const rng = createRng(4);
  for (let t = 0; t < 5; t++) {
    const shuffled = [...rs];
    for (let i = shuffled.length - 1; i > 0; i--) { const j = rng.nextInt(i + 1); [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!]; }
    assert.deepEqual(createStrategy('FedAvg').aggregateFit(1, g, shuffled).weights, ref);
  }
});

test('streaming add/finish in site order equals aggregateFit, and in arrival order agrees to float32 rounding', () => {
  const rs = randomResults(40, 30, 5), g = W(new Array(30).fill(0), 0);
  const ref = createStrategy('FedAvg').aggregateFit(1, g, rs).weights;
  const agg = createStrategy('FedAvg').begin(1, g);
  for (const r of rs) agg.add(r);
  assert.equal(agg.count, 40);
  assert.deepEqual(agg.finish().weights, ref);
  const rev = createStrategy('FedAvg').begin(1, g);
  for (const r of [...rs].reverse()) rev.add(r);
  const got = rev.finish().weights;
  for (const k of Object.keys(ref)) for (let i = 0; i < ref[k]!.data.length; i++) {
    const a = ref[k]!.data[i]!, b = got[k]!.data[i]!;
    assert.ok(Math.abs(a - b) <= Math.abs(a) * 2 ** -23, `${a} vs ${b}`);
  }
});

test('bad results are refused with the site named', () => {
  const s = createStrategy('FedAvg');
  const agg = s.begin(1, x0);
  agg.add({ siteId: 'a', weights: W([1, 2], 3), numExamples: 1 });
  assert.throws(() => agg.add({ siteId: 'a', weights: W([1, 2], 3), numExamples: 1 }), /site "a" sent two results/);
  assert.throws(() => agg.add({ siteId: 'b', weights: W([1, 2, 3], 3), numExamples: 1 }), /site "b": tensor "weight" has shape \[1,3\]/);
  assert.throws(() => agg.add({ siteId: 'c', weights: W([1, 2], 3), numExamples: 0 }), /site "c": numExamples/);
  const bad = s.begin(1, x0);
  bad.add({ siteId: 'd', weights: W([NaN, 2], 3), numExamples: 1 });
  assert.throws(() => bad.finish(), /not finite/);
  assert.throws(() => s.begin(1, x0).finish(), /no updates/);
  // The one-pass batch path checks finiteness too, naming tensor and index.
  assert.throws(() => s.aggregateFit(1, x0, [
    { siteId: 'e', weights: W([1, 2], Infinity), numExamples: 1 }, { siteId: 'f', weights: W([1, 2], 3), numExamples: 1 },
  ]), /tensor "bias" is not finite at index 0/);
  assert.throws(() => s.begin(0, x0), /round must be/);
});

test('FedProx sends mu, SCAFFOLD sends its flag and server lr; both average like FedAvg', () => {
  const prox = createStrategy('FedProx', { mu: 0.5 });
  assert.equal(prox.configureFit(1, x0, ['a'])[0]!.config.proximalMu, 0.5);
  const sc = createStrategy('scaffold', { serverLr: 1 });
  assert.deepEqual(sc.configureFit(1, x0, ['a'])[0]!.config.extra, { scaffold: true, serverLr: 1 });
  const rs = randomResults(3, 2, 9);
  assert.deepEqual(sc.aggregateFit(1, x0, rs).weights, createStrategy('FedAvg').aggregateFit(1, x0, rs).weights);
});

test('FedAvgM with momentum 0 and server lr 1 is FedAvg; with momentum it accelerates', () => {
  const rs = randomResults(3, 2, 9);
  const m0 = createStrategy('FedAvgM', { serverMomentum: 0 }).aggregateFit(1, x0, rs).weights;
  const avg = createStrategy('FedAvg').aggregateFit(1, x0, rs).weights;
  for (const k of Object.keys(avg)) for (let i = 0; i < avg[k]!.data.length; i++) assert.ok(Math.abs(m0[k]!.data[i]! - avg[k]!.data[i]!) < 1e-6);
  // Two rounds towards the same target: the second step is 1 + β times the first pseudo-gradient.
  const s = createStrategy('FedAvgM', { serverMomentum: 0.5 });
  const target = [{ siteId: 'a', weights: W([1, 1], 1), numExamples: 1 }];
  const x1 = s.aggregateFit(1, x0, target).weights; // v = −1 → x = 1
  assert.deepEqual([...x1['weight']!.data], [1, 1]);
  const x2 = s.aggregateFit(2, x1, target).weights; // g = 0, v = −0.5 → x = 1.5
  assert.deepEqual([...x2['weight']!.data], [1.5, 1.5]);
});
