import { test } from 'node:test';
import assert from 'node:assert/strict';
import { binaryData } from '../testing.js';
import { zerosLike, layoutOf } from '../../protocol/tensors.js';
import { gradCheck } from '../gradcheck.js';
import { createRng } from '../rng.js';
import type { Dataset } from '../types.js';
import { Mlp } from './mlp.js';

const all = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

test('init: nn.Linear layout and U(±1/√fan_in) bounds, deterministic per seed', () => {
  const m = new Mlp({ kind: 'mlp', inputDim: 6, hidden: [8, 4], activation: 'relu' });
  const w = m.init(createRng(1));
  const shapes = Object.fromEntries(Object.entries(layoutOf(w)).map(([k, t]) => [k, t.shape]));
  assert.deepEqual(shapes, {
    'layers.0.weight': [8, 6], 'layers.0.bias': [8],
    'layers.1.weight': [4, 8], 'layers.1.bias': [4],
    'layers.2.weight': [1, 4], 'layers.2.bias': [1],
  });
  for (const [name, fin] of [['layers.0', 6], ['layers.1', 8], ['layers.2', 4]] as const) {
    for (const part of ['weight', 'bias']) {
      const v = w[`${name}.${part}`]!.data;
      assert.ok(v.every((x) => Math.abs(x) <= 1 / Math.sqrt(fin)), `${name}.${part} within bound`);
    }
  }
  assert.deepEqual(m.init(createRng(1)), w);
  assert.notDeepEqual(m.init(createRng(2)), w);
});

for (const activation of ['relu', 'tanh'] as const) {
  test(`${activation}: analytic gradient equals central differences`, () => {
    const m = new Mlp({ kind: 'mlp', inputDim: 5, hidden: [7, 3], activation });
    const data = binaryData(25, 5, 3);
    const res = gradCheck(m, m.init(createRng(4)), data, all(25));
    assert.ok(res.ok, JSON.stringify(res.mismatches));
    assert.equal(res.checked, 7 * 5 + 7 + 3 * 7 + 3 + 3 + 1);
  });
}

test('dropout: gradient checks with a fixed mask, and the mask really changes the loss', () => {
  const m = new Mlp({ kind: 'mlp', inputDim: 4, hidden: [10, 6], activation: 'tanh', dropout: 0.3 });
  const data = binaryData(20, 4, 5);
  const w = m.init(createRng(6));
  const res = gradCheck(m, w, data, all(20), { rngFactory: () => createRng(99) });
  assert.ok(res.ok, JSON.stringify(res.mismatches));
  const noDrop = m.lossAndGrad(w, data, all(20), zerosLike(w));
  const drop1 = m.lossAndGrad(w, data, all(20), zerosLike(w), createRng(99));
  const drop2 = m.lossAndGrad(w, data, all(20), zerosLike(w), createRng(100));
  assert.notEqual(drop1, noDrop);
  assert.notEqual(drop1, drop2);
  assert.equal(m.lossAndGrad(w, data, all(20), zerosLike(w), createRng(99)), drop1);
  // Inference never drops: evaluate's loss equals the training loss without an rng.
  assert.ok(Math.abs(m.evaluate(w, data).loss - noDrop) < 1e-12);
});

test('lossAndGrad adds into grad and uses only the given rows', () => {
  const m = new Mlp({ kind: 'mlp', inputDim: 3, hidden: [4], activation: 'relu' });
  const data = binaryData(10, 3, 7);
  const w = m.init(createRng(8));
  const g = zerosLike(w);
  m.lossAndGrad(w, data, [1, 4, 6], g);
  const once = Array.from(g['layers.0.weight']!.data);
  m.lossAndGrad(w, data, [1, 4, 6], g);
  g['layers.0.weight']!.data.forEach((v, i) => assert.ok(Math.abs(v - 2 * once[i]!) < 1e-6));
  const sub: Dataset = { x: data.x.slice(3, 6), n: 1, d: 3, y: data.y.slice(1, 2) };
  assert.equal(m.lossAndGrad(w, data, [1], zerosLike(w)), m.evaluate(w, sub).loss);
});

test('learns XOR, which no linear model can', () => {
  const n = 200, rng = createRng(11);
  const x = new Float32Array(n * 2), y = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const a = rng.next() < 0.5 ? -1 : 1, b = rng.next() < 0.5 ? -1 : 1;
    x[2 * i] = a + 0.1 * rng.normal();
    x[2 * i + 1] = b + 0.1 * rng.normal();
    y[i] = a * b > 0 ? 1 : 0;
  }
  const data: Dataset = { x, n, d: 2, y };
  const m = new Mlp({ kind: 'mlp', inputDim: 2, hidden: [16], activation: 'tanh' });
  const w = m.init(createRng(12));
  for (let step = 0; step < 600; step++) {
    const g = zerosLike(w);
    const idx = Array.from({ length: 16 }, () => rng.nextInt(n));
    m.lossAndGrad(w, data, idx, g);
    for (const k of Object.keys(w)) w[k]!.data.forEach((v, i, arr) => (arr[i] = v - 0.5 * g[k]!.data[i]!));
  }
  const ev = m.evaluate(w, data);
  assert.ok(ev.accuracy! > 0.97, `accuracy ${ev.accuracy}`);
  assert.ok(ev.auc! > 0.99);
  const p = m.predict(w, data);
  assert.equal(p.length, n);
  assert.ok(p.every((v) => v >= 0 && v <= 1));
});

test('refuses bad specs and mismatched weights or data', () => {
  assert.throws(() => new Mlp({ kind: 'mlp', inputDim: 0, hidden: [], activation: 'relu' }), /inputDim/);
  assert.throws(() => new Mlp({ kind: 'mlp', inputDim: 2, hidden: [3, 0], activation: 'relu' }), /positive integers/);
  assert.throws(() => new Mlp({ kind: 'mlp', inputDim: 2, hidden: [3], activation: 'relu', dropout: 1 }), /dropout/);
  assert.throws(() => new Mlp({ kind: 'mlp', inputDim: 2, hidden: [3], activation: 'gelu' as 'relu' }), /activation/);
  const m = new Mlp({ kind: 'mlp', inputDim: 2, hidden: [3], activation: 'relu' });
  const w = m.init(createRng(1));
  assert.throws(() => m.predict(w, binaryData(4, 3, 1)), /3 features/);
  delete w['layers.1.bias'];
  assert.throws(() => m.predict(w, binaryData(4, 2, 1)), /layers\.1\.bias/);
});
