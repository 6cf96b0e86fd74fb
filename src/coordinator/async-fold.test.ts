/** The FedBuff fold against hand computations: staleness weights, the example- and staleness-weighted step, DP. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { foldBuffer, stalenessWeight } from './async-fold.js';
import { tensor, type Weights } from '../protocol/tensors.js';
import { CryptoNormal } from '../privacy/noise.js';
import type { AsyncSpec } from '../protocol/api.js';

const w = (...v: number[]): Weights => ({ w: tensor([v.length], new Float32Array(v)) });
const vals = (x: Weights) => [...x.w!.data];

test('staleness weights: polynomial (1+s)^-a with FedBuff\'s a = 0.5 by default, constant, hinge', () => {
  const poly: AsyncSpec = { bufferSize: 2 };
  assert.equal(stalenessWeight(poly, 0), 1);
  assert.equal(stalenessWeight(poly, 3), 0.5); // 4^-0.5
  assert.equal(stalenessWeight({ bufferSize: 2, stalenessExponent: 1 }, 4), 0.2);
  assert.equal(stalenessWeight({ bufferSize: 2, stalenessWeight: 'constant' }, 7), 1);
  const hinge: AsyncSpec = { bufferSize: 2, stalenessWeight: 'hinge', hingeAfter: 2, hingeSlope: 3 };
  assert.equal(stalenessWeight(hinge, 2), 1);
  assert.equal(stalenessWeight(hinge, 4), 1 / 7); // 1 / (3·(4−2) + 1)
  assert.equal(stalenessWeight({ bufferSize: 2, stalenessWeight: 'hinge' }, 5), 1 / 11); // defaults b = 4, slope 10
  assert.throws(() => stalenessWeight(poly, -1), /whole number/);
});

test('the fold: current + η · Σ n·g(s)·(local − base) / Σ n, each delta from the version its site trained from', () => {
  const current = w(1, 2);
  // A trained from the current version (s = 0), 1 example; B from an older one (s = 3, weight 1/2), 3 examples.
  const a = { base: w(1, 2), local: w(2, 2), numExamples: 1, staleness: 0 };
  const b = { base: w(0, 0), local: w(1, 4), numExamples: 3, staleness: 3 };
  const out = foldBuffer(current, [a, b], { async: { bufferSize: 2 } });
  // Δ̄ = (1·1·[1, 0] + 3·0.5·[1, 4]) / 4 = [2.5, 6] / 4 = [0.625, 1.5]
  assert.deepEqual(vals(out), [1.625, 3.5]);
  const slow = foldBuffer(current, [a, b], { async: { bufferSize: 2, serverLr: 0.5 } });
  assert.deepEqual(vals(slow), [1.3125, 2.75]);
  const flat = foldBuffer(current, [a, b], { async: { bufferSize: 2, stalenessWeight: 'constant' } });
  // Δ̄ = ([1, 0] + 3·[1, 4]) / 4 = [1, 3]
  assert.deepEqual(vals(flat), [2, 5]);
});

test('fresh updates with η = 1 fold into exactly FedAvg of the sites\' models', () => {
  const current = w(0.5, -1, 3);
  const models = [w(1, 0, 2), w(0, 2, 4), w(0.25, -0.5, 1)];
  const n = [2, 1, 5];
  const out = foldBuffer(current, models.map((m, i) => ({ base: current, local: m, numExamples: n[i]!, staleness: 0 })), { async: { bufferSize: 3 } });
  const fedavg = [0, 1, 2].map((j) => Math.fround(models.reduce((s, m, i) => s + n[i]! * m.w!.data[j]!, 0) / 8));
  vals(out).forEach((v, j) => assert.ok(Math.abs(v - fedavg[j]!) < 1e-6, `tensor value ${j}: ${v} vs FedAvg ${fedavg[j]}`));
});

test('under client-level DP: each delta clipped to C, staleness-weighted, noised N(0, σ²C²) on the sum, divided by K', () => {
  const current = w(0, 0);
  // ‖[3, 4]‖ = 5 clips to C = 1 → [0.6, 0.8]; [0.3, 0] is within C. Example counts do not weigh (equal weights).
  const a = { base: w(0, 0), local: w(3, 4), numExamples: 100, staleness: 0 };
  const b = { base: w(1, 1), local: w(1.3, 1), numExamples: 1, staleness: 3 };
  const exact = foldBuffer(current, [a, b], { async: { bufferSize: 2 }, dp: { clipNorm: 1, noiseMultiplier: 0, normal: new CryptoNormal() } });
  // ([0.6, 0.8] + 0.5·[0.3, 0]) / 2
  const want = [Math.fround(Math.fround(0.6) + 0.5 * Math.fround(Math.fround(1.3) - 1)) / 2, Math.fround(0.8) / 2];
  vals(exact).forEach((v, j) => assert.ok(Math.abs(v - want[j]!) < 1e-6, `${v} vs ${want[j]}`));
  const seed = new Uint8Array(32).fill(7);
  const noisy = foldBuffer(current, [a, b], { async: { bufferSize: 2 }, dp: { clipNorm: 1, noiseMultiplier: 2, normal: new CryptoNormal(seed) } });
  const z = new CryptoNormal(seed);
  const noise = [z.normal(), z.normal()];
  vals(noisy).forEach((v, j) => assert.ok(Math.abs(v - (want[j]! + (2 * noise[j]!) / 2)) < 1e-6, `value ${j} carries σC·z/K`));
});
