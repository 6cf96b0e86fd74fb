import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dpFit, dpSgdTrain, planDpSgd } from './dpsgd.js';
import { PrivacyBudget } from './budget.js';
import { CryptoNormal } from './noise.js';
import { epsilonFor } from './rdp.js';
import { TinyLinear, flat, seedBytes } from './testing.js';
import type { Dataset } from '../learning/types.js';

function data(n: number, d: number, seed: string): Dataset {
  const g = new CryptoNormal(seedBytes(seed));
  const x = new Float32Array(n * d), y = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let t = 0.5;
    for (let j = 0; j < d; j++) { x[i * d + j] = g.normal(); t += (j + 1) * 0.3 * x[i * d + j]!; }
    y[i] = t + 0.1 * g.normal();
  }
  return { x, y, n, d };
}

test('without noise, q = 1 and a large C, DP-SGD is full-batch gradient descent', () => {
  const m = new TinyLinear(3), ds = data(50, 3, 'gd');
  const w0 = m.init(null as never);
  const r = dpSgdTrain(m, w0, ds, { clipNorm: 1e6, noiseMultiplier: 0, sampleRate: 1, steps: 5, lr: 0.1 }, new CryptoNormal());
  // Reference: plain GD with the mean gradient.
  let w = structuredClone(w0);
  const all = Array.from({ length: 50 }, (_, i) => i);
  for (let s = 0; s < 5; s++) {
    const g = m.init(null as never);
    m.lossAndGrad(w, ds, all, g);
    for (const k of Object.keys(w)) w[k]!.data.forEach((v, i) => { w[k]!.data[i] = v - 0.1 * g[k]!.data[i]!; });
  }
  flat(r.weights).forEach((v, i) => assert.ok(Math.abs(v - flat(w)[i]!) < 1e-4));
  assert.equal(r.meanBatch, 50);
  assert.equal(r.clippedFraction, 0);
});

test('per-example clipping bounds one outlier row\'s influence', () => {
  const m = new TinyLinear(2), ds = data(20, 2, 'outlier');
  ds.y[0] = 1e6; // a row with a huge gradient
  const w0 = m.init(null as never);
  const r = dpSgdTrain(m, w0, ds, { clipNorm: 1, noiseMultiplier: 0, sampleRate: 1, steps: 1, lr: 1 }, new CryptoNormal());
  // Each row contributes at most C = 1 to the sum; the step is ≤ lr · n·C / (qN) = 1.
  const step = Math.sqrt(flat(r.weights).reduce((a, v) => a + v * v, 0));
  assert.ok(step <= 1 + 1e-6, `step ${step}`);
  assert.ok(r.clippedFraction > 0);
});

test('noise on the step has std lr·σC/(qN); Poisson batches average qN', () => {
  const d = 2000, m = new TinyLinear(d);
  const ds: Dataset = { x: new Float32Array(100 * d), y: new Float32Array(100), n: 100, d }; // zero gradients
  const r = dpSgdTrain(m, m.init(null as never), ds, { clipNorm: 2, noiseMultiplier: 1.5, sampleRate: 0.2, steps: 1, lr: 0.5 }, new CryptoNormal(seedBytes('n')));
  const v = flat(r.weights), sd = Math.sqrt(v.reduce((a, x) => a + x * x, 0) / v.length);
  const want = (0.5 * 1.5 * 2) / (0.2 * 100);
  assert.ok(Math.abs(sd - want) / want < 0.05, `sd ${sd} vs ${want}`);
  const r2 = dpSgdTrain(new TinyLinear(1), new TinyLinear(1).init(null as never), data(200, 1, 'b'),
    { clipNorm: 1, noiseMultiplier: 1, sampleRate: 0.1, steps: 300, lr: 0.01 }, new CryptoNormal(seedBytes('p')));
  assert.ok(Math.abs(r2.meanBatch - 20) < 1, `mean batch ${r2.meanBatch}`);
});

test('DP-SGD still learns at moderate noise', () => {
  const m = new TinyLinear(3), ds = data(400, 3, 'learn');
  const w0 = m.init(null as never);
  const before = m.evaluate(w0, ds).loss;
  const plan = planDpSgd({ targetEps: 3, delta: 1e-3, rows: 400, batchSize: 40, epochs: 5 });
  const r = dpSgdTrain(m, w0, ds, { clipNorm: 3, ...plan, lr: 0.3 }, new CryptoNormal(seedBytes('l')));
  assert.ok(m.evaluate(r.weights, ds).loss < 0.1 * before);
  assert.ok(epsilonFor(plan.noiseMultiplier, 1e-3, plan.sampleRate, plan.steps) <= 3);
  assert.equal(plan.steps, 50);
});

test('bad configuration is refused', () => {
  const m = new TinyLinear(1), ds = data(5, 1, 'bad'), w = m.init(null as never);
  const ok = { clipNorm: 1, noiseMultiplier: 1, sampleRate: 0.5, steps: 1, lr: 0.1 };
  for (const bad of [{ clipNorm: 0 }, { noiseMultiplier: -1 }, { sampleRate: 0 }, { sampleRate: 1.5 }, { steps: 1.5 }, { lr: 0 }]) {
    assert.throws(() => dpSgdTrain(m, w, ds, { ...ok, ...bad }, new CryptoNormal()));
  }
});

test('dpFit + PrivacyBudget: the site checks, trains, spends, and then refuses the next task over budget', () => {
  const m = new TinyLinear(2), ds = data(100, 2, 'site');
  const budget = new PrivacyBudget(2, 1e-3);
  const plan = planDpSgd({ targetEps: 1.5, delta: 1e-3, rows: 100, batchSize: 10, epochs: 2 });
  const cfg = { clipNorm: 1, lr: 0.1, ...plan };
  assert.equal(budget.wouldExceed(plan), false);
  const out = dpFit({ model: m, weights: m.init(null as never), data: ds, config: cfg, random: new CryptoNormal(seedBytes('f')) });
  budget.spend(out.plan, 'study s1 round 1');
  assert.equal(out.numExamples, 100);
  assert.ok(Math.abs(budget.spent() - epsilonFor(plan.noiseMultiplier, 1e-3, plan.sampleRate, plan.steps)) < 1e-9);
  assert.equal(budget.wouldExceed(out.plan), true, 'a second identical task would pass ε = 2');
});
