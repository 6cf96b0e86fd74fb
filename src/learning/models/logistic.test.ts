import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LogisticRegression, bceWithLogit } from './logistic.js';
import { createRng } from '../rng.js';
import { zerosLike } from '../weights.js';
import type { Dataset } from '../types.js';

function randomData(n: number, d: number, seed: number): Dataset {
  const r = createRng(seed);
  const x = new Float32Array(n * d), y = new Float32Array(n);
  for (let i = 0; i < n * d; i++) x[i] = r.normal();
  for (let i = 0; i < n; i++) y[i] = r.next() < 0.5 ? 1 : 0;
  return { x, n, d, y };
}

test('init is U(±1/sqrt(d)) for weight and bias, with PyTorch names and shapes', () => {
  const m = new LogisticRegression(13);
  const w = m.init(createRng(1));
  assert.deepEqual(w['weight']!.shape, [1, 13]);
  assert.deepEqual(w['bias']!.shape, [1]);
  const bound = 1 / Math.sqrt(13);
  for (const v of [...w['weight']!.data, ...w['bias']!.data]) assert.ok(Math.abs(v) <= bound);
  assert.notDeepEqual(m.init(createRng(1)), m.init(createRng(2)));
});

test('analytic gradient matches central finite differences', () => {
  const d = 5, data = randomData(11, d, 3), m = new LogisticRegression(d);
  const w = m.init(createRng(4));
  const idx = [0, 3, 4, 7, 10];
  const g = zerosLike(w);
  m.lossAndGrad(w, data, idx, g);
  // Finite differences in float64 by evaluating the loss on a float64 copy of the weights.
  const lossAt = (wv: number[], b: number) => {
    let s = 0;
    for (const r of idx) {
      let z = b;
      for (let j = 0; j < d; j++) z += wv[j]! * data.x[r * d + j]!;
      s += bceWithLogit(z, data.y[r]!);
    }
    return s / idx.length;
  };
  const wv = [...w['weight']!.data], b = w['bias']!.data[0]!, h = 1e-6;
  for (let j = 0; j < d; j++) {
    const up = [...wv], dn = [...wv];
    up[j]! += h;
    dn[j]! -= h;
    const fd = (lossAt(up, b) - lossAt(dn, b)) / (2 * h);
    assert.ok(Math.abs(fd - g['weight']!.data[j]!) < 1e-5, `weight[${j}] fd ${fd} vs ${g['weight']!.data[j]}`);
  }
  const fdB = (lossAt(wv, b + h) - lossAt(wv, b - h)) / (2 * h);
  assert.ok(Math.abs(fdB - g['bias']!.data[0]!) < 1e-5);
});

test('gradients accumulate into the given buffer (caller zeroes it)', () => {
  const data = randomData(6, 3, 8), m = new LogisticRegression(3), w = m.init(createRng(1));
  const g1 = zerosLike(w), g2 = zerosLike(w);
  m.lossAndGrad(w, data, [0, 1, 2], g1);
  m.lossAndGrad(w, data, [0, 1, 2], g2);
  m.lossAndGrad(w, data, [0, 1, 2], g2);
  for (let j = 0; j < 3; j++) assert.ok(Math.abs(g2['weight']!.data[j]! - 2 * g1['weight']!.data[j]!) < 1e-6);
});

test('BCE is finite and exact for extreme logits', () => {
  assert.equal(bceWithLogit(1000, 1), 0);
  assert.equal(bceWithLogit(-1000, 1), 1000);
  assert.ok(Math.abs(bceWithLogit(0, 0) - Math.log(2)) < 1e-15);
  assert.ok(Math.abs(bceWithLogit(2, 0) - -Math.log(1 - 1 / (1 + Math.exp(-2)))) < 1e-12);
});

test('predict and evaluate agree with the definition', () => {
  const m = new LogisticRegression(2);
  const w = { weight: { shape: [1, 2], data: new Float32Array([1, -1]) }, bias: { shape: [1], data: new Float32Array([0]) } };
  const data: Dataset = { x: new Float32Array([2, 0, 0, 2, 1, 1]), n: 3, d: 2, y: new Float32Array([1, 0, 1]) };
  const p = m.predict(w, data);
  assert.ok(Math.abs(p[0]! - 1 / (1 + Math.exp(-2))) < 1e-7);
  const e = m.evaluate(w, data);
  // z = 2, −2, 0 → p > 0.5 only for row 0; row 2 (p = 0.5, label 1) counts as wrong.
  assert.equal(e.accuracy, 2 / 3);
  assert.equal(e.n, 3);
  assert.throws(() => m.predict(w, { ...data, d: 3 }), /features/);
});
