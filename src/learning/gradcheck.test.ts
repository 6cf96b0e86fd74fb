import { test } from 'node:test';
import assert from 'node:assert/strict';
import { binaryData } from './testing.js';
import { gradCheck } from './gradcheck.js';
import { createRng } from './rng.js';
import { LogisticRegression } from './models/logistic.js';
import type { Dataset, Model, Rng } from './types.js';
import type { Weights } from '../protocol/tensors.js';


test('logistic regression: analytic gradient equals central differences', () => {
  const model = new LogisticRegression(5);
  const data = binaryData(30, 5, 1);
  const w = model.init(createRng(2));
  const res = gradCheck(model, w, data, Array.from({ length: 30 }, (_, i) => i));
  assert.ok(res.ok, JSON.stringify(res.mismatches));
  assert.equal(res.checked, 6);
});

test('the checker catches a gradient that is 1% off, and a missing coordinate', () => {
  const inner = new LogisticRegression(4);
  const scaled: Model = {
    spec: inner.spec,
    init: (r: Rng) => inner.init(r),
    predict: (w, d) => inner.predict(w, d),
    evaluate: (w, d) => inner.evaluate(w, d),
    lossAndGrad(w: Weights, d: Dataset, idx: ArrayLike<number>, g: Weights, r?: Rng) {
      const loss = inner.lossAndGrad(w, d, idx, g, r);
      for (const t of Object.values(g)) for (let i = 0; i < t.data.length; i++) t.data[i]! *= 1.01;
      g['bias']!.data[0] = 0;
      return loss;
    },
  };
  const data = binaryData(20, 4, 3);
  const res = gradCheck(scaled, scaled.init(createRng(4)), data, Array.from({ length: 20 }, (_, i) => i));
  assert.equal(res.ok, false);
  assert.ok(res.mismatches.some((m) => m.tensor === 'bias'));
  assert.ok(res.mismatches.some((m) => m.tensor === 'weight'));
});

test('maxPerTensor limits the coordinates checked', () => {
  const model = new LogisticRegression(10);
  const res = gradCheck(model, model.init(createRng(5)), binaryData(10, 10, 6), [0, 1, 2, 3], { maxPerTensor: 3 });
  assert.equal(res.checked, 4); // 3 of the weight, the single bias
  assert.ok(res.ok);
});
