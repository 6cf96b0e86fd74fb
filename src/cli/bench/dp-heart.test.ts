import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runDpHeart } from './dp-heart.js';
import { epsilonFor } from '../../privacy/rdp.js';

test('dp-heart: σ grows as ε shrinks, every centre stays within its ε, accuracies are sane', () => {
  const rows = runDpHeart({ eps: [Infinity, 3, 0.5], delta: 1e-3, seeds: [1, 2], rounds: 2, localSteps: 20, batch: 4, lr: 0.01, clip: 1 });
  assert.deepEqual(rows.map((r) => r.eps), [Infinity, 3, 0.5]);
  assert.deepEqual(rows[0]!.sigma, [0, 0, 0, 0]);
  rows[1]!.sigma.forEach((s, c) => assert.ok(rows[2]!.sigma[c]! > s && s > 0, `centre ${c}`));
  rows[1]!.epsSpent.forEach((e) => assert.ok(e <= 3));
  // The smallest centre (switzerland, 30 training rows) samples at the highest rate, so needs the most noise.
  assert.equal(rows[2]!.sigma.indexOf(Math.max(...rows[2]!.sigma)), 2);
  assert.ok(Math.abs(epsilonFor(rows[2]!.sigma[0]!, 1e-3, 4 / 199, 40) - 0.5) < 0.01, 'σ is calibrated tightly, not just safely');
  for (const r of rows) for (const a of r.accuracy) assert.ok(a > 0.4 && a <= 1, `accuracy ${a}`);
  assert.equal(rows[0]!.dropPoints, 0);
});
