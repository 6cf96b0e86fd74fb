import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv } from 'node:crypto';
import { MASK_BLOCK, MaskStream, addVector, agree, applyMasks, applyMasksJs, applyMasksSimd, derive, generateX25519, open, privateKeyFromRaw, seal } from './crypto.js';
import { simdKernel } from './simd.js';
import { neighbourGraph, recommendedDegree } from './graph.js';

test('X25519 agreement is symmetric and survives a raw private-key round trip', () => {
  const a = generateX25519(), b = generateX25519();
  const ab = agree(a.privateKey, b.publicRaw), ba = agree(b.privateKey, a.publicRaw);
  assert.deepEqual(ab, ba);
  assert.deepEqual(agree(privateKeyFromRaw(a.privateRaw), b.publicRaw), ab);
  assert.throws(() => agree(a.privateKey, new Uint8Array(32)), /all-zero|small-order|failed/i);
});

test('AES-GCM refuses a flipped bit, other associated data, or another key', () => {
  const k = derive(Buffer.alloc(32, 1), 'r', 'x'), k2 = derive(Buffer.alloc(32, 2), 'r', 'x');
  const ct = seal(k, Buffer.from('share'), 'aad');
  assert.equal(open(k, ct, 'aad').toString(), 'share');
  for (let i = 0; i < ct.length; i += 5) {
    const bad = Buffer.from(ct); bad[i] = bad[i]! ^ 1;
    assert.throws(() => open(k, bad, 'aad'), /authentication/);
  }
  assert.throws(() => open(k, ct, 'aad2'), /authentication/);
  assert.throws(() => open(k2, ct, 'aad'), /authentication/);
  assert.throws(() => open(k, ct.subarray(0, 20), 'aad'), /too short/);
});

test('mask stream = AES-256-CTR keystream of the 256-bit seed; blockwise masking = one-shot', () => {
  const seed = derive(Buffer.alloc(32, 9), 'round', 'm');
  const len = MASK_BLOCK * 2 + 123;
  const ref = createCipheriv('aes-256-ctr', seed, Buffer.alloc(16)).update(Buffer.alloc(len * 4));
  const refWords = new Int32Array(ref.buffer, ref.byteOffset, len);
  const acc = new Int32Array(len);
  applyMasks(acc, [{ stream: new MaskStream(seed), sign: 1 }]);
  assert.deepEqual(acc, refWords);
  applyMasks(acc, [{ stream: new MaskStream(seed), sign: -1 }]);
  assert.ok(acc.every((v) => v === 0), '+mask − mask = 0 mod 2^32');
  const other = new Int32Array(8);
  applyMasks(other, [{ stream: new MaskStream(derive(seed, 'round', 'other')), sign: 1 }]);
  assert.notDeepEqual(Array.from(other), Array.from(refWords.subarray(0, 8)));
});

test('neighbour graph is k-regular, symmetric, loop-free and seeded', () => {
  const seed = Buffer.alloc(32, 3);
  for (const [n, k] of [[10, 4], [100, 14], [7, 6], [5, 10]] as const) {
    const g = neighbourGraph(n, k, seed);
    const deg = Math.min(k, n - 1);
    g.forEach((nb, i) => {
      assert.equal(nb.length, deg);
      assert.equal(new Set(nb).size, deg);
      assert.ok(!nb.includes(i));
      for (const j of nb) assert.ok(g[j]!.includes(i), `${i}–${j} symmetric`);
    });
    assert.deepEqual(neighbourGraph(n, k, seed), g);
  }
  assert.notDeepEqual(neighbourGraph(100, 14, Buffer.alloc(32, 4)), neighbourGraph(100, 14, seed));
  assert.throws(() => neighbourGraph(10, 3, seed), /even/);
  assert.deepEqual(recommendedDegree(100), { degree: 14, threshold: 8 });
  assert.deepEqual(recommendedDegree(10), { degree: 8, threshold: 5 });
});

test('WebAssembly SIMD masking equals the JavaScript loop, word for word (odd lengths, both signs)', () => {
  const k = simdKernel();
  assert.ok(k, 'Node 20 has WebAssembly SIMD');
  for (const len of [1, 3, 5, 17, MASK_BLOCK - 1, MASK_BLOCK + 7, 3 * MASK_BLOCK + 2]) {
    const init = new Int32Array(len);
    const s0 = new MaskStream(derive(Buffer.alloc(32, 5), 'r', 'init'));
    applyMasksJs(init, [{ stream: s0, sign: 1 }]);
    const seeds = [1, 2, 3].map((i) => derive(Buffer.alloc(32, i), 'r', `m${len}`));
    const mk = () => seeds.map((seed, i) => ({ stream: new MaskStream(seed), sign: (i === 1 ? -1 : 1) as 1 | -1 }));
    const a = Int32Array.from(init), b = Int32Array.from(init);
    applyMasksJs(a, mk());
    applyMasksSimd(b, mk(), k!);
    assert.deepEqual(b, a, `length ${len}`);
  }
});

test('addVector wraps mod 2^32 and matches the scalar sum', () => {
  const len = MASK_BLOCK + 5;
  const a = new Int32Array(len), v = new Int32Array(len);
  applyMasksJs(a, [{ stream: new MaskStream(derive(Buffer.alloc(32, 7), 'r', 'a')), sign: 1 }]);
  applyMasksJs(v, [{ stream: new MaskStream(derive(Buffer.alloc(32, 8), 'r', 'v')), sign: 1 }]);
  const want = a.map((x, i) => (x + v[i]!) | 0);
  addVector(a, v);
  assert.deepEqual(a, want);
  assert.throws(() => addVector(a, new Int32Array(3)), /length/);
});

test('a mask stream started at a word gives the words the stream from 0 gives there (CTR seek), at any offset', () => {
  const seed = derive(Buffer.alloc(32, 9), 'r', 'seek');
  const whole = new MaskStream(seed).next(1000);
  for (const at of [0, 1, 3, 4, 5, 17, 63, 64, 999]) {
    const part = new MaskStream(seed, at).next(1000 - at);
    assert.deepEqual(Array.from(part), Array.from(whole.subarray(at)), `from word ${at}`);
  }
  assert.throws(() => new MaskStream(seed, -1), /word index/);
});
