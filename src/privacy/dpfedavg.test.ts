import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AdaptiveClip, adaptiveUpdateNoiseMultiplier, dpFedAvgAggregate, privatiseUpdate, roundMechanism, updateDelta } from './dpfedavg.js';
import { PrivacyBudget } from './budget.js';
import { epsilonFor } from './rdp.js';
import { CryptoNormal } from './noise.js';
import { l2Norm } from './clip.js';
import { seedBytes } from './testing.js';
import type { Weights } from '../protocol/tensors.js';

const vec = (xs: number[]): Weights => ({ p: { shape: [xs.length], data: new Float32Array(xs) } });

test('central DP-FedAvg without noise = global + mean of clipped deltas over m', () => {
  const g = vec([1, 1]);
  const deltas = [vec([3, 4]), vec([0.1, 0]), vec([0, -0.2])];
  const out = dpFedAvgAggregate(g, deltas, { clipNorm: 1, noiseMultiplier: 0, mode: 'central', clientsPerRound: 4 }, new CryptoNormal());
  // The first delta clips to (0.6, 0.8); the denominator is m = 4, not the 3 that answered.
  const want = [1 + (0.6 + 0.1 + 0) / 4, 1 + (0.8 + 0 - 0.2) / 4];
  out.p!.data.forEach((v, i) => assert.ok(Math.abs(v - want[i]!) < 1e-5));
  assert.deepEqual(Array.from(deltas[0]!.p!.data), [3, 4], 'the callers deltas are not modified');
});

test('central noise has std σC/m per coordinate', () => {
  const n = 40000, g: Weights = { p: { shape: [n], data: new Float32Array(n) } };
  const out = dpFedAvgAggregate(g, [], { clipNorm: 2, noiseMultiplier: 1.5, mode: 'central', clientsPerRound: 10 }, new CryptoNormal(seedBytes('c')));
  const sd = l2Norm(out) / Math.sqrt(n);
  assert.ok(Math.abs(sd - 0.3) < 0.006, `sd ${sd}`);
});

test('distributed noise: n sites each adding σ²C²/n sum to σ²C²', () => {
  const sites = 8, len = 20000, src = new CryptoNormal(seedBytes('dist'));
  const cfg = { clipNorm: 1, noiseMultiplier: 2, mode: 'distributed' as const, clientsPerRound: sites };
  const sum = new Float64Array(len);
  for (let s = 0; s < sites; s++) {
    const d: Weights = { p: { shape: [len], data: new Float32Array(len) } };
    const r = privatiseUpdate(d, cfg, src);
    assert.equal(r.unclipped, true);
    d.p!.data.forEach((v, i) => { sum[i] = sum[i]! + v; });
  }
  const sd = Math.sqrt(sum.reduce((a, v) => a + v * v, 0) / len);
  assert.ok(Math.abs(sd - 2) < 0.04, `sum noise sd ${sd}`);
});

test('privatiseUpdate clips and reports the bit; updateDelta checks layout', () => {
  const d = updateDelta(vec([4, 5]), vec([1, 1]));
  const r = privatiseUpdate(d, { clipNorm: 2, noiseMultiplier: 0, mode: 'central', clientsPerRound: 1 }, new CryptoNormal());
  assert.equal(r.norm, 5);
  assert.equal(r.unclipped, false);
  assert.ok(l2Norm(d) <= 2);
  assert.throws(() => updateDelta({ q: vec([1]).p! }, vec([1])), /missing/);
});

test('adaptive clipping tracks the target quantile of update norms', () => {
  // Norms ~ Uniform(0, 10): the median is 5; start far away at C = 0.1 and at C = 100.
  const src = new CryptoNormal(seedBytes('adapt'));
  for (const start of [0.1, 100]) {
    const a = new AdaptiveClip({ initialClip: start, targetQuantile: 0.5, learningRate: 0.2, countNoiseStd: 5 });
    for (let round = 0; round < 400; round++) {
      const bits = Array.from({ length: 100 }, () => src.uniform() * 10 <= a.clipNorm);
      a.update(bits, 100, src);
    }
    assert.ok(Math.abs(a.clipNorm - 5) < 0.8, `from ${start}: ${a.clipNorm}`);
    assert.deepEqual(AdaptiveClip.fromJSON(JSON.parse(JSON.stringify(a))).toJSON(), a.toJSON());
  }
});

test('adaptive noise split (Andrew et al.): z_Δ⁻² + (2σ_b)⁻² = z⁻²', () => {
  const z = 1.1, sb = 5, zd = adaptiveUpdateNoiseMultiplier(z, sb);
  assert.ok(Math.abs(zd ** -2 + (2 * sb) ** -2 - z ** -2) < 1e-12);
  assert.ok(zd > z);
  assert.throws(() => adaptiveUpdateNoiseMultiplier(2, 0.5), /must exceed/);
});

test('the coordinator accounts DP-FedAvg rounds as q = m/N subsampled Gaussian steps', () => {
  const cfg = { clipNorm: 1, noiseMultiplier: 1.1, mode: 'central' as const, clientsPerRound: 10 };
  const plan = roundMechanism(cfg, 100);
  assert.deepEqual(plan, { sampleRate: 0.1, noiseMultiplier: 1.1, steps: 1 });
  const b = new PrivacyBudget(8, 1e-5);
  for (let r = 0; r < 50; r++) b.spend(plan, `round ${r + 1}`);
  assert.ok(Math.abs(b.spent() - epsilonFor(1.1, 1e-5, 0.1, 50)) < 1e-9);
  assert.throws(() => roundMechanism(cfg, 5), /totalSites/);
});
