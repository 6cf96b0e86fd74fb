import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MT19937, torchLinearInit } from './torch-init.js';
import { LogisticRegression } from './models/logistic.js';
import { createRng } from './rng.js';

test('MT19937 matches the C++ standard reference outputs', () => {
  const g = new MT19937(5489);
  assert.equal(g.next32(), 3499211612); // first output of std::mt19937 default seed
  const h = new MT19937(5489);
  let v = 0;
  for (let i = 0; i < 10000; i++) v = h.next32();
  assert.equal(v, 4123659995); // the C++ standard's required 10000th output
});

test('torch-style uniform draws stay inside the bounds and use 24 bits', () => {
  const g = new MT19937(1);
  for (let i = 0; i < 10000; i++) {
    const u = g.uniformF32(-0.5, 0.5);
    assert.ok(u >= -0.5 && u < 0.5);
    assert.equal(Math.fround(u), u);
  }
});

test('torchLinearInit fills a logistic model like nn.Linear(13, 1) and is deterministic in the seed', () => {
  const m = new LogisticRegression(13);
  const a = torchLinearInit(m.init(createRng(1)), 42);
  const b = torchLinearInit(m.init(createRng(2)), 42);
  const c = torchLinearInit(m.init(createRng(1)), 43);
  assert.deepEqual(a, b, 'the starting point depends only on the seed');
  assert.notDeepEqual(a, c);
  const bound = 1 / Math.sqrt(13);
  for (const v of [...a['weight']!.data, ...a['bias']!.data]) assert.ok(Math.abs(v) <= bound + 1e-7);
  // The weight takes the first 13 draws, the bias the 14th, each mapped as torch's CPU kernel maps them.
  const g = new MT19937(42);
  const wb = Math.sqrt(2 / 6) * Math.sqrt(3 / 13);
  const first = g.uniformF32(-wb, wb);
  assert.equal(a['weight']!.data[0], first);
});

test('torchLinearInit refuses tensors that are not Linear layers', () => {
  assert.throws(() => torchLinearInit({ scale: { shape: [3], data: new Float32Array(3) } }, 1), /scale/);
});
