import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { checkReleased, suppressTable } from './release.js';

test('a small cell is suppressed, and so is its complement in a line the total would reveal', () => {
  assert.deepEqual(suppressTable([3, 10, 20], [3], { minCellCount: 5 }), [null, null, 20]);
  assert.deepEqual(suppressTable([0, 10, 20], [3], { minCellCount: 5 }), [0, 10, 20]);
  assert.deepEqual(suppressTable([0, 10, 20], [3], { minCellCount: 5, suppressZeros: true }), [null, null, 20]);
  // Two small cells already hide each other.
  assert.deepEqual(suppressTable([1, 2, 20], [3], { minCellCount: 5 }), [null, null, 20]);
  // 2 × 2: one small cell takes its row, its column and the cell diagonal to it.
  assert.deepEqual(suppressTable([2, 30, 40, 50], [2, 2], { minCellCount: 5 }), [null, null, null, null]);
  // 2 × 3: the small cell, the smallest of its row, and the cells under them in the other row.
  assert.deepEqual(suppressTable([2, 30, 9, 40, 50, 60], [2, 3], { minCellCount: 5 }), [null, 30, null, null, 50, null]);
});

/** Every line along every axis, and the whole table. */
function lines(shape: number[]): number[][] {
  const size = shape.reduce((a, b) => a * b, 1);
  const strides = shape.map((_, a) => shape.slice(a + 1).reduce((x, y) => x * y, 1));
  const out = [Array.from({ length: size }, (_, i) => i)];
  shape.forEach((len, a) => {
    for (let base = 0; base < size; base++) if (Math.floor(base / strides[a]!) % len === 0) out.push(Array.from({ length: len }, (_, k) => base + k * strides[a]!));
  });
  return out;
}

test('property: no count from 1 to k−1 is ever released, released counts are the true ones, no line has exactly one hidden cell', () => {
  const table = fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 3 }).chain((shape) =>
    fc.tuple(fc.constant(shape), fc.array(fc.integer({ min: 0, max: 30 }), { minLength: shape.reduce((a, b) => a * b, 1), maxLength: shape.reduce((a, b) => a * b, 1) }), fc.integer({ min: 1, max: 12 }), fc.boolean()));
  fc.assert(fc.property(table, ([shape, counts, k, zeros]) => {
    const out = suppressTable(counts, shape, { minCellCount: k, suppressZeros: zeros });
    out.forEach((v, i) => {
      if (v === null) return;
      assert.equal(v, counts[i]);
      assert.ok(v >= k || (v === 0 && !zeros), `released ${v} with k=${k}`);
    });
    for (const line of lines(shape)) {
      const hidden = line.filter((i) => out[i] === null).length;
      if (line.length > 1) assert.ok(hidden !== 1, `line ${line} of ${shape} hides exactly one cell: ${JSON.stringify(counts)} → ${JSON.stringify(out)}`);
    }
    assert.deepEqual(checkReleased(out, k, 'counts', { zerosAllowed: !zeros, noisy: false }), []);
  }), { numRuns: 2000, seed: 13 });
});

test('the coordinator refuses an answer holding a small or fractional count', () => {
  assert.deepEqual(checkReleased([0, 5, null, 7], 5, 'counts', { zerosAllowed: true, noisy: false }), []);
  assert.match(checkReleased([3], 5, 'counts', { zerosAllowed: true, noisy: false })[0]!, /counts\[0\] = 3 is below the site's minimum cell count 5/);
  assert.match(checkReleased([0], 5, 'counts', { zerosAllowed: false, noisy: false })[0]!, /below/);
  assert.match(checkReleased([6.5], 5, 'counts', { zerosAllowed: true, noisy: false })[0]!, /not a whole count/);
  assert.deepEqual(checkReleased([6.5], 5, 'counts', { zerosAllowed: true, noisy: true }), []);
});
