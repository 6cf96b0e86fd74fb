import { test } from 'node:test';
import assert from 'node:assert/strict';
import { accuracy, logLoss, rocAuc } from './metrics.js';

test('AUC on known cases', () => {
  assert.equal(rocAuc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]), 0.75); // sklearn's doc example
  assert.equal(rocAuc([0.1, 0.2, 0.3], [0, 1, 1]), 1);
  assert.equal(rocAuc([0.3, 0.2, 0.1], [0, 1, 1]), 0);
  assert.equal(rocAuc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]), 0.5); // all tied → one half
  // one tie across classes: pairs (pos 0.5 vs neg 0.5) count ½
  assert.equal(rocAuc([0.2, 0.5, 0.5, 0.9], [0, 0, 1, 1]), (1 + 1 + 0.5 + 1) / 4);
  assert.ok(Number.isNaN(rocAuc([0.1, 0.2], [1, 1])));
});

test('accuracy uses the strict threshold p > 0.5', () => {
  assert.equal(accuracy([0.5, 0.51, 0.2, 0.9], [1, 1, 0, 0]), 0.5);
  assert.throws(() => accuracy([0.5], [1, 0]), /1 predictions but 2 labels/);
});

test('log-loss by hand and clipped', () => {
  assert.ok(Math.abs(logLoss([0.8, 0.3], [1, 0]) - -(Math.log(0.8) + Math.log(0.7)) / 2) < 1e-12);
  assert.ok(Number.isFinite(logLoss([0, 1], [1, 0])));
});
