import { test } from 'node:test';
import assert from 'node:assert/strict';
import { zerosLike } from '../../protocol/tensors.js';
import { gradCheck } from '../gradcheck.js';
import { createRng } from '../rng.js';
import type { Dataset } from '../types.js';
import { Cox, coxLoss, type CoxSpec } from './cox.js';

/** Direct formula with explicit risk sets and plain exp/log (only for moderate scores). */
function naive(s: number[], t: number[], e: number[], ties: 'none' | 'breslow'): number {
  // FLamby: stable sort by time, latest first; the risk set is the prefix up to the row.
  const order = s.map((_, i) => i).sort((a, b) => t[b]! - t[a]!);
  const pos = new Map(order.map((i, p) => [i, p]));
  let loss = 0, events = 0;
  for (let i = 0; i < s.length; i++) {
    if (!e[i]) continue;
    events++;
    let den = 0;
    for (let j = 0; j < s.length; j++) {
      const inRisk = ties === 'breslow' ? t[j]! >= t[i]! : pos.get(j)! <= pos.get(i)!;
      if (inRisk) den += Math.exp(s[j]!);
    }
    loss += Math.log(den) - s[i]!;
  }
  return events ? loss / events : 0;
}

function survivalData(n: number, d: number, seed: number, distinctTimes = 1000): Dataset {
  const rng = createRng(seed);
  const x = new Float32Array(n * d), time = new Float32Array(n), event = new Float32Array(n);
  for (let i = 0; i < n * d; i++) x[i] = rng.normal();
  for (let i = 0; i < n; i++) {
    time[i] = 1 + rng.nextInt(distinctTimes);
    event[i] = rng.next() < 0.6 ? 1 : 0;
  }
  return { x, n, d, y: new Float32Array(0), time, event };
}
const all = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

test('loss equals the direct formula, ties included, for both tie rules', () => {
  const rng = createRng(1);
  for (let trial = 0; trial < 50; trial++) {
    const m = 1 + rng.nextInt(12);
    const s = all(m).map(() => 3 * rng.normal());
    const t = all(m).map(() => rng.nextInt(4)); // many ties
    const e = all(m).map(() => (rng.next() < 0.5 ? 1 : 0));
    for (const ties of ['none', 'breslow'] as const) {
      assert.ok(Math.abs(coxLoss(s, t, e, ties) - naive(s, t, e, ties)) < 1e-12, `trial ${trial} ${ties}`);
    }
  }
});

test('FLamby tie rule: among equal times, only earlier batch rows join a row\'s risk set', () => {
  const [a, b] = [0.3, -1.2];
  const lse = Math.log(Math.exp(a) + Math.exp(b));
  // Row 0 sorts first, so R(0) = {0} and contributes 0; R(1) = {0, 1}.
  assert.ok(Math.abs(coxLoss([a, b], [2, 2], [1, 1], 'none') - (lse - b) / 2) < 1e-15);
  // Breslow: both see both.
  assert.ok(Math.abs(coxLoss([a, b], [2, 2], [1, 1], 'breslow') - (2 * lse - a - b) / 2) < 1e-15);
});

test('stays finite: huge scores, all censored, a single row', () => {
  const g = new Float64Array(3);
  const big = coxLoss([1e6, -1e6, 0], [1, 2, 3], [1, 1, 1], 'none', g);
  assert.ok(Number.isFinite(big) && g.every(Number.isFinite));
  // Rows by time, latest first: 0 (time 3, score 0), -1e6, 1e6. Event at time 1 (score 1e6) has
  // the largest score in its risk set: contributes ≈ 0; the others: 0 and ≈ 1e6.
  assert.ok(Math.abs(big - 1e6 / 3) < 1e-6);
  assert.ok(Number.isFinite(coxLoss([1e300, -1e300], [1, 2], [1, 1], 'breslow')));
  const g0 = new Float64Array(3);
  assert.equal(coxLoss([5, 1, 2], [1, 2, 3], [0, 0, 0], 'none', g0), 0);
  assert.deepEqual(Array.from(g0), [0, 0, 0]);
  const g1 = new Float64Array(1);
  assert.equal(coxLoss([42], [7], [1], 'none', g1), 0);
  assert.equal(g1[0], 0);
});

test('score gradient sums to zero (a shift of every score changes nothing)', () => {
  const g = new Float64Array(6);
  coxLoss([0.1, 2, -1, 0.5, 3, -2], [5, 3, 3, 1, 8, 2], [1, 0, 1, 1, 0, 1], 'breslow', g);
  assert.ok(Math.abs(g.reduce((a, b) => a + b, 0)) < 1e-12);
});

const cases: Array<{ name: string; spec: CoxSpec; times: number }> = [
  { name: 'linear, distinct times', spec: { kind: 'cox', inputDim: 4 } , times: 1000 },
  { name: 'linear, heavy ties (FLamby rule)', spec: { kind: 'cox', inputDim: 4, ties: 'none' } , times: 3 },
  { name: 'linear, heavy ties (Breslow)', spec: { kind: 'cox', inputDim: 4, ties: 'breslow' } , times: 3 },
  { name: 'MLP tanh, ties (Breslow)', spec: { kind: 'cox', inputDim: 4, hidden: [6, 3], activation: 'tanh', ties: 'breslow' } , times: 4 },
  { name: 'MLP relu, ties (FLamby rule)', spec: { kind: 'cox', inputDim: 4, hidden: [5], activation: 'relu' } , times: 4 },
];
for (const c of cases) {
  test(`gradient check: ${c.name}`, () => {
    const model = new Cox(c.spec);
    const data = survivalData(30, 4, 2, c.times);
    const w = model.init(createRng(3));
    const res = gradCheck(model, w, data, [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 12, 20, 22, 29]);
    assert.ok(res.ok, JSON.stringify(res.mismatches));
  });
}

test('the output bias gets no gradient (the partial likelihood ignores a constant)', () => {
  const model = new Cox({ kind: 'cox', inputDim: 3 });
  const data = survivalData(20, 3, 4, 5);
  const w = model.init(createRng(5));
  const g = zerosLike(w);
  model.lossAndGrad(w, data, all(20), g);
  assert.ok(Math.abs(g['layers.0.bias']!.data[0]!) < 1e-7);
  assert.ok(g['layers.0.weight']!.data.some((v) => Math.abs(v) > 1e-4));
});

test('evaluate returns n, the whole-data loss and the C-index; predict returns log-risk', () => {
  const model = new Cox({ kind: 'cox', inputDim: 3 });
  const data = survivalData(40, 3, 6);
  const w = model.init(createRng(7));
  const ev = model.evaluate(w, data);
  assert.equal(ev.n, 40);
  assert.ok(Math.abs(ev.loss - model.lossAndGrad(w, data, all(40), zerosLike(w))) < 1e-12);
  assert.ok(ev.cIndex! >= 0 && ev.cIndex! <= 1);
  // Flipping the sign of the risk score mirrors the C-index (no tied scores here).
  const neg = structuredClone(w);
  neg['layers.0.weight']!.data.forEach((v, i, a) => (a[i] = -v));
  assert.ok(Math.abs(model.evaluate(neg, data).cIndex! - (1 - ev.cIndex!)) < 1e-12);
  const p = model.predict(w, data);
  const wv = w['layers.0.weight']!.data, b = w['layers.0.bias']!.data[0]!;
  const want = b + wv[0]! * data.x[0]! + wv[1]! * data.x[1]! + wv[2]! * data.x[2]!;
  assert.ok(Math.abs(p[0]! - want) < 1e-6);
});

test('refuses data without survival columns and bad tie rules', () => {
  const model = new Cox({ kind: 'cox', inputDim: 2 });
  const w = model.init(createRng(1));
  const bad: Dataset = { x: new Float32Array(4), n: 2, d: 2, y: new Float32Array(2) };
  assert.throws(() => model.evaluate(w, bad), /time.*event/);
  assert.throws(() => new Cox({ kind: 'cox', inputDim: 2, ties: 'efron' as 'none' }), /ties/);
});

test('property: finite loss ≥ 0 and finite gradient summing to 0 for any scores, ties and censoring', async () => {
  const fc = (await import('fast-check')).default;
  const row = fc.tuple(fc.double({ min: -1e6, max: 1e6, noNaN: true }), fc.integer({ min: 0, max: 5 }), fc.boolean());
  fc.assert(
    fc.property(fc.array(row, { minLength: 1, maxLength: 30 }), fc.constantFrom('none' as const, 'breslow' as const), (rows, ties) => {
      const s = rows.map((r) => r[0]), t = rows.map((r) => r[1]), e = rows.map((r) => (r[2] ? 1 : 0));
      const g = new Float64Array(rows.length);
      const loss = coxLoss(s, t, e, ties, g);
      assert.ok(Number.isFinite(loss) && loss >= 0, `loss ${loss}`);
      assert.ok(g.every(Number.isFinite));
      // Each event's share of ∂L/∂s is a probability vector minus a unit vector: |Σ| stays at rounding level.
      assert.ok(Math.abs(g.reduce((a, b) => a + b, 0)) < 1e-9);
    }),
    { numRuns: 300, seed: 11 },
  );
});
