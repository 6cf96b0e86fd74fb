import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRng } from '../../learning/rng.js';
import type { Dataset } from '../../learning/types.js';
import { applyStats, combineSums, localSums, statsFromSums } from './global-stats.js';

function data(n: number, d: number, seed: number, shift: number): Dataset {
  const rng = createRng(seed);
  const x = Float32Array.from({ length: n * d }, () => shift + 10 * rng.normal());
  return { x, n, d, y: new Float32Array(n) };
}

test('global statistics from sites\' sums equal the statistics of the pooled rows', () => {
  const sites = [data(50, 3, 1, 100), data(7, 3, 2, -20), data(200, 3, 3, 5)];
  const global = statsFromSums(combineSums(sites.map(localSums)));
  // Direct two-pass computation over the concatenated rows.
  for (let j = 0; j < 3; j++) {
    const col = sites.flatMap((s) => Array.from({ length: s.n }, (_, r) => s.x[r * 3 + j]!));
    const mean = col.reduce((a, b) => a + b, 0) / col.length;
    const sd = Math.sqrt(col.reduce((a, b) => a + (b - mean) ** 2, 0) / (col.length - 1));
    assert.ok(Math.abs(global.mean[j]! - mean) < 1e-9 * Math.max(1, Math.abs(mean)));
    assert.ok(Math.abs(global.std[j]! - sd) < 1e-9 * sd);
  }
});

test('the sums are JSON-safe and hold no row', () => {
  const s = localSums(data(5, 2, 4, 0));
  assert.deepEqual(Object.keys(s).sort(), ['n', 'sum', 'sumSq']);
  assert.deepEqual(JSON.parse(JSON.stringify(s)), s);
  assert.equal(s.sum.length, 2);
});

test('combineSums refuses mismatched or malformed reports', () => {
  const a = localSums(data(5, 2, 4, 0));
  assert.throws(() => combineSums([]), /no site/);
  assert.throws(() => combineSums([a, { n: 3, sum: [1], sumSq: [1] }]), /report 1 has 1 columns, expected 2/);
  assert.throws(() => combineSums([a, { n: 3, sum: [1, NaN], sumSq: [1, 1] }]), /report 1 column 1/);
  assert.throws(() => combineSums([a, { n: -1, sum: [1, 1], sumSq: [1, 1] }]), /bad row count/);
  assert.throws(() => statsFromSums({ n: 1, sum: [1], sumSq: [1] }), /too few/);
  assert.throws(() => localSums(data(2, 2, 1, 0)), /2 training rows are too few/);
});

test('applyStats standardises masked columns only and keeps a constant column finite', () => {
  const ds: Dataset = { x: new Float32Array([1, 5, 0, 3, 5, 1, 5, 5, 0]), n: 3, d: 3, y: new Float32Array(3) };
  // (3 rows: the minimum a site may report sums for.)
  const st = statsFromSums(localSums(ds));
  assert.deepEqual(st.std.map((v) => +v.toFixed(6)), [2, 0, 0.57735]);
  const out = applyStats(ds, st, [true, true, false]);
  assert.deepEqual(Array.from(out.x.filter((_, i) => i % 3 === 0)), [-1, 0, 1]);
  assert.deepEqual(Array.from(out.x.filter((_, i) => i % 3 === 1)), [0, 0, 0]);
  assert.deepEqual(Array.from(out.x.filter((_, i) => i % 3 === 2)), [0, 1, 0]);
  assert.deepEqual(Array.from(ds.x), [1, 5, 0, 3, 5, 1, 5, 5, 0], 'input unchanged');
});
