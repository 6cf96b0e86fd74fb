import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { P, inv, mod, randomElement, bigintToBytes, bytesToBigint } from './field.js';
import { reconstruct, split } from './shamir.js';

test('field inverse and byte conversions', () => {
  for (const a of [1n, 2n, 12345678901234567890n, P - 1n, randomElement()]) assert.equal(mod(a * inv(a)), 1n);
  assert.throws(() => inv(0n), /inverse of 0/);
  assert.throws(() => inv(P), /inverse of 0/);
  const v = randomElement() % (1n << 256n);
  assert.equal(bytesToBigint(bigintToBytes(v, 32)), v);
  assert.throws(() => bigintToBytes(1n << 256n, 32), /does not fit/);
});

test('any t of n shares reconstruct the secret (every subset, n = 6, t = 3)', () => {
  const secret = randomElement() % (1n << 256n);
  const xs = [1n, 2n, 3n, 4n, 5n, 6n];
  const shares = split(secret, 3, xs);
  let subsets = 0;
  for (let a = 0; a < 6; a++) for (let b = a + 1; b < 6; b++) for (let c = b + 1; c < 6; c++) {
    assert.equal(reconstruct([shares[a]!, shares[b]!, shares[c]!], 3), secret);
    subsets++;
  }
  assert.equal(subsets, 20);
});

test('property: random secret, t ≤ n, random t-subset reconstructs; fewer than t refuses', () => {
  fc.assert(fc.property(
    fc.bigInt({ min: 0n, max: (1n << 256n) - 1n }), fc.integer({ min: 1, max: 12 }), fc.integer({ min: 0, max: 12 }), fc.integer(),
    (secret, n, tRaw, seed) => {
      const t = 1 + (tRaw % n);
      const xs = Array.from({ length: n }, (_, i) => BigInt(i * 7 + 3));
      const shares = split(secret, t, xs);
      const order = shares.map((s, i) => ({ s, k: Math.sin(seed + i) })).sort((p, q) => p.k - q.k).map((p) => p.s);
      assert.equal(reconstruct(order.slice(0, t), t), secret);
      assert.equal(reconstruct(order, t), secret); // all n: consistency check passes
      if (t > 1) assert.throws(() => reconstruct(order.slice(0, t - 1), t), /need/);
    }), { numRuns: 60 });
});

test('t − 1 shares are consistent with every candidate secret (they carry no information)', () => {
  // For shares at x=1, x=2 of a degree-2 polynomial, any claimed secret s' fits some polynomial through them.
  const shares = split(42n, 3, [1n, 2n, 3n]).slice(0, 2);
  for (const claim of [0n, 42n, 999n]) {
    // The polynomial through (0, claim), (1, y1), (2, y2) exists for every claim: Lagrange gives it.
    const y = (x: bigint) => {
      const pts = [{ x: 0n, y: claim }, ...shares];
      let acc = 0n;
      for (let j = 0; j < 3; j++) {
        let num = 1n, den = 1n;
        for (let m = 0; m < 3; m++) if (m !== j) { num = mod(num * (x - pts[m]!.x)); den = mod(den * (pts[j]!.x - pts[m]!.x)); }
        acc = mod(acc + pts[j]!.y * num * inv(den));
      }
      return acc;
    };
    assert.equal(y(1n), shares[0]!.y);
    assert.equal(reconstruct([{ x: 0n + 7n, y: y(7n) }, ...shares], 3), claim);
  }
});

test('a corrupted share is detected when more than t shares are given', () => {
  const shares = split(7n, 3, [1n, 2n, 3n, 4n]);
  shares[3] = { x: shares[3]!.x, y: mod(shares[3]!.y + 1n) };
  assert.throws(() => reconstruct(shares, 3), /inconsistent/);
  assert.throws(() => reconstruct([shares[0]!, shares[0]!, shares[1]!], 3), /duplicate/);
  assert.throws(() => split(1n, 3, [1n, 2n]), /threshold/);
  assert.throws(() => split(1n, 2, [0n, 2n]), /1\.\.p/);
  assert.throws(() => split(P, 2, [1n, 2n]), /field element/);
});
