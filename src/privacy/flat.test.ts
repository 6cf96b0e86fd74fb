import { test } from 'node:test';
import assert from 'node:assert/strict';
import { flatten, unflatten } from './flat.js';

test('flatten/unflatten round-trip in sorted-name order, with deltas', () => {
  const a = { z: { shape: [2], data: new Float32Array([1, 2]) }, a: { shape: [1, 2], data: new Float32Array([3, 4]) } };
  const b = { a: { shape: [1, 2], data: new Float32Array([1, 1]) }, z: { shape: [2], data: new Float32Array([1, 1]) } };
  assert.deepEqual(Array.from(flatten(a)), [3, 4, 1, 2]);
  const d = flatten(a, b);
  assert.deepEqual(Array.from(d), [2, 3, 0, 1]);
  const back = unflatten(d, a, b);
  assert.deepEqual(back.z!.data, a.z.data);
  assert.deepEqual(back.a!.shape, [1, 2]);
  assert.throws(() => unflatten([1, 2, 3], a), /4/);
  assert.throws(() => flatten(a, { a: b.a }), /missing/);
});
