import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CryptoNormal, addGaussianNoise, fillNormal } from './noise.js';
import { clipInPlace, l2Norm } from './clip.js';
import { seedBytes } from './testing.js';

test('seeded CryptoNormal is reproducible; unseeded streams differ', () => {
  const a = new CryptoNormal(seedBytes('x')), b = new CryptoNormal(seedBytes('x'));
  for (let i = 0; i < 100; i++) assert.equal(a.normal(), b.normal());
  const c = new CryptoNormal(), d = new CryptoNormal();
  assert.notEqual(c.normal(), d.normal());
  assert.throws(() => new CryptoNormal(new Uint8Array(16)), /32 bytes/);
});

test('normals have mean 0, variance 1 and Gaussian tails (200k draws, fixed seed)', () => {
  const g = new CryptoNormal(seedBytes('moments'));
  const n = 200_000;
  let s = 0, s2 = 0, s4 = 0, beyond2 = 0;
  for (let i = 0; i < n; i++) {
    const z = g.normal();
    s += z; s2 += z * z; s4 += z ** 4;
    if (Math.abs(z) > 2) beyond2++;
  }
  assert.ok(Math.abs(s / n) < 0.01);
  assert.ok(Math.abs(s2 / n - 1) < 0.015);
  assert.ok(Math.abs(s4 / n - 3) < 0.08, 'kurtosis of a normal is 3');
  assert.ok(Math.abs(beyond2 / n - 0.0455) < 0.002, 'P(|Z| > 2) = 0.0455');
});

test('uniforms lie strictly inside (0,1)', () => {
  const g = new CryptoNormal(seedBytes('u'));
  for (let i = 0; i < 10000; i++) { const u = g.uniform(); assert.ok(u > 0 && u < 1); }
});

test('addGaussianNoise scales by std and refuses bad std', () => {
  const w = { a: { shape: [50000], data: new Float32Array(50000) } };
  addGaussianNoise(w, 3, new CryptoNormal(seedBytes('std')));
  const sd = l2Norm(w) / Math.sqrt(50000);
  assert.ok(Math.abs(sd - 3) < 0.05, `sd ${sd}`);
  assert.throws(() => addGaussianNoise(w, -1, new CryptoNormal()), /std/);
  assert.throws(() => addGaussianNoise(w, NaN, new CryptoNormal()), /std/);
});

test('clipInPlace bounds the norm, keeps direction, leaves small vectors alone', () => {
  const w = { a: { shape: [3], data: new Float32Array([3, 4, 0]) }, b: { shape: [1], data: new Float32Array([12]) } };
  const before = clipInPlace(w, 1);
  assert.equal(before, 13);
  assert.ok(l2Norm(w) <= 1);
  assert.ok(Math.abs(w.a.data[0]! / w.b.data[0]! - 3 / 12) < 1e-6);
  const small = { a: { shape: [2], data: new Float32Array([0.3, 0.4]) } };
  assert.equal(clipInPlace(small, 1), l2Norm(small));
  assert.deepEqual(Array.from(small.a.data), [Math.fround(0.3), Math.fround(0.4)]);
  assert.throws(() => clipInPlace({ a: { shape: [1], data: new Float32Array([NaN]) } }, 1), /non-finite/);
  assert.throws(() => clipInPlace(small, 0), /clip norm/);
});

test('fill draws exactly the variates normal() would, across odd slice lengths, refills and the carried spare', () => {
  const a = new CryptoNormal(seedBytes('fill')), b = new CryptoNormal(seedBytes('fill'));
  // Past several of the generator's 64 KiB refills (16384 words, 4096 pairs), at odd offsets.
  for (const len of [0, 1, 5, 2, 7, 64, 3, 1000, 40_001, 9_999, 8_193]) {
    const out = new Float64Array(len);
    a.fill(out);
    for (let i = 0; i < len; i++) assert.equal(out[i], b.normal(), `slice of ${len}, index ${i}`);
  }
  // A source without fill is drawn one variate at a time.
  const c = new CryptoNormal(seedBytes('plain')), d = new CryptoNormal(seedBytes('plain'));
  const out = new Float64Array(9);
  fillNormal({ normal: () => c.normal() }, out);
  for (let i = 0; i < 9; i++) assert.equal(out[i], d.normal());
});
