import { it } from 'node:test';
import assert from 'node:assert/strict';
import { indexOfNonFinite } from './finite.js';

it('finds the first non-finite value, or -1 when every value is finite', () => {
  assert.equal(indexOfNonFinite(new Float32Array([0, -0, 1e-45, 3.4e38, -3.4e38])), -1);
  assert.equal(indexOfNonFinite(new Float32Array(0)), -1);
  for (const bad of [NaN, Infinity, -Infinity]) {
    const v = new Float32Array(1000).fill(0.5);
    v[700] = bad;
    v[900] = bad;
    assert.equal(indexOfNonFinite(v), 700, String(bad));
  }
  assert.equal(indexOfNonFinite([1, 2, Number.NaN]), 2);
});
