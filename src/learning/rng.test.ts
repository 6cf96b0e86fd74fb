import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Xoshiro128, createRng, deriveSeed, permutation, seed32 } from './rng.js';

test('xoshiro128** matches the reference outputs for state {1,2,3,4}', () => {
  // First outputs of the reference C implementation (prng.di.unimi.it) from s = {1, 2, 3, 4}.
  const r = Xoshiro128.fromState({ s: [1, 2, 3, 4], spare: null });
  assert.deepEqual([r.nextUint32(), r.nextUint32(), r.nextUint32(), r.nextUint32()], [11520, 0, 5927040, 70819200]);
});

test('same seed gives the same stream; different seeds differ', () => {
  const a = createRng(42), b = createRng(42), c = createRng(43);
  const xa = Array.from({ length: 20 }, () => a.nextUint32());
  const xb = Array.from({ length: 20 }, () => b.nextUint32());
  const xc = Array.from({ length: 20 }, () => c.nextUint32());
  assert.deepEqual(xa, xb);
  assert.notDeepEqual(xa, xc);
});

test('state round-trips mid-stream, including the spare normal', () => {
  const a = createRng(7);
  a.normal(); // leaves a spare
  const b = Xoshiro128.fromState(a.state());
  for (let i = 0; i < 10; i++) assert.equal(a.normal(), b.normal());
  assert.throws(() => Xoshiro128.fromState({ s: [0, 0, 0, 0], spare: null }), /all zero/);
});

test('uniform and normal have the right first two moments', () => {
  const r = createRng(1);
  const n = 200000;
  let su = 0, sn = 0, sn2 = 0;
  for (let i = 0; i < n; i++) {
    const u = r.next();
    assert.ok(u >= 0 && u < 1);
    su += u;
    const z = r.normal();
    sn += z;
    sn2 += z * z;
  }
  assert.ok(Math.abs(su / n - 0.5) < 0.005, `uniform mean ${su / n}`);
  assert.ok(Math.abs(sn / n) < 0.01, `normal mean ${sn / n}`);
  assert.ok(Math.abs(sn2 / n - 1) < 0.02, `normal variance ${sn2 / n}`);
});

test('deriveSeed separates labels, their types and their order', () => {
  const seen = new Set([
    deriveSeed(42), deriveSeed(42, 'a'), deriveSeed(42, 'b'), deriveSeed(42, 1), deriveSeed(42, '1'),
    deriveSeed(42, 'a', 'b'), deriveSeed(42, 'b', 'a'), deriveSeed(43, 'a'), deriveSeed(42, 'ab'),
  ]);
  assert.equal(seen.size, 9);
  assert.equal(deriveSeed(42, 'site', 3), deriveSeed(42, 'site', 3));
  assert.equal(seed32(2 ** 32 + 5) === seed32(5), false, 'high bits of large seeds are not dropped');
});

test('nextInt is in range and permutation is a permutation', () => {
  const r = createRng(5);
  const counts = new Array(3).fill(0);
  for (let i = 0; i < 30000; i++) counts[r.nextInt(3)]++;
  for (const c of counts) assert.ok(Math.abs(c - 10000) < 500, `counts ${counts}`);
  const p = permutation(100, createRng(9));
  assert.deepEqual([...p].sort((a, b) => a - b), Array.from({ length: 100 }, (_, i) => i));
});
