import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Adam, Sgd, createOptimizer } from './optim.js';
import type { Weights } from '../protocol/tensors.js';

const W = (...v: number[]): Weights => ({ p: { shape: [v.length], data: new Float32Array(v) } });
const close = (a: number, b: number, tol = 1e-6) => assert.ok(Math.abs(a - b) < tol, `${a} vs ${b}`);

test('SGD without momentum: w -= lr g', () => {
  const w = W(1, -2), g = W(0.5, 4);
  new Sgd(0.1).step(w, g);
  close(w['p']!.data[0]!, 0.95);
  close(w['p']!.data[1]!, -2.4);
});

test('SGD with momentum follows PyTorch (first buffer = g)', () => {
  const w = W(1), opt = new Sgd(0.1, 0.9);
  opt.step(w, W(1)); // buf = 1 → w = 0.9
  close(w['p']!.data[0]!, 0.9);
  opt.step(w, W(2)); // buf = 0.9·1 + 2 = 2.9 → w = 0.9 − 0.29 = 0.61
  close(w['p']!.data[0]!, 0.61);
});

test('Adam first two steps by hand (bias-corrected)', () => {
  const w = W(1), opt = new Adam(0.01);
  opt.step(w, W(2));
  // m = 0.2, v = 0.004; m̂ = 2, v̂ = 4 → step = 0.01·2/(2 + 1e-8)
  close(w['p']!.data[0]!, 1 - 0.01 * 2 / (2 + 1e-8));
  const w1 = w['p']!.data[0]!;
  opt.step(w, W(-1));
  const m = 0.9 * 0.2 + 0.1 * -1, v = 0.999 * 0.004 + 0.001 * 1;
  const expected = w1 - (0.01 / (1 - 0.81)) * m / (Math.sqrt(v) / Math.sqrt(1 - 0.999 ** 2) + 1e-8);
  close(w['p']!.data[0]!, expected);
});

test('createOptimizer validates its spec', () => {
  assert.ok(createOptimizer({ kind: 'adam', lr: 0.1 }) instanceof Adam);
  assert.throws(() => createOptimizer({ kind: 'sgd', lr: 0 }), /lr must be > 0/);
  assert.throws(() => createOptimizer({ kind: 'rmsprop' as 'sgd', lr: 1 }), /unknown optimizer kind "rmsprop"/);
  assert.throws(() => new Sgd(0.1).step(W(1, 2), W(1)), /gradient for "p"/);
});
