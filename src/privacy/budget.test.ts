import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PrivacyBudget } from './budget.js';
import { epsilonFor } from './rdp.js';

const plan = { sampleRate: 0.1, noiseMultiplier: 1.2, steps: 100 };

test('spend accumulates on the RDP account (composition, not adding ε)', () => {
  const b = new PrivacyBudget(10, 1e-5);
  b.spend(plan, 'round 1');
  b.spend(plan, 'round 2');
  const want = epsilonFor(1.2, 1e-5, 0.1, 200);
  assert.ok(Math.abs(b.spent() - want) < 1e-12);
  assert.ok(b.spent() < 2 * epsilonFor(1.2, 1e-5, 0.1, 100), 'RDP composition beats adding ε');
  assert.equal(b.records().length, 2);
  assert.ok(Math.abs(b.remaining() - (10 - want)) < 1e-12);
});

const small = { sampleRate: 0.01, noiseMultiplier: 1.2, steps: 100 }; // ε ≈ 0.78 at δ = 1e-5

test('wouldExceed and a refused spend change nothing', () => {
  const b = new PrivacyBudget(0.8, 1e-5);
  const big = { ...small, steps: 5000 };
  assert.equal(b.wouldExceed(small), false);
  b.spend(small);
  assert.equal(b.wouldExceed(small), true, 'a second identical task would reach ε ≈ 0.88 > 0.8');
  assert.equal(b.wouldExceed(big), true);
  const before = JSON.stringify(b);
  assert.throws(() => b.spend(big), /budget exceeded/);
  assert.equal(JSON.stringify(b), before);
});

test('round-trips through JSON and keeps refusing', () => {
  const b = new PrivacyBudget(2, 1e-5);
  b.spend(small, 'r1');
  const c = PrivacyBudget.fromJSON(JSON.parse(JSON.stringify(b)));
  assert.equal(c.spent(), b.spent());
  assert.deepEqual(c.records(), b.records());
  assert.equal(c.wouldExceed({ ...small, steps: 2000 }), true);
  assert.equal(c.wouldExceed({ ...small, steps: 500 }), false);
  assert.throws(() => PrivacyBudget.fromJSON({ epsilon: 'x' }), /numeric/);
  assert.throws(() => new PrivacyBudget(0, 1e-5), /ε/);
  assert.throws(() => new PrivacyBudget(1, 1), /δ/);
});
