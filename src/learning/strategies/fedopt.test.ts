import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createStrategy } from './registry.js';
import type { Weights } from '../../protocol/tensors.js';

const V = (...a: number[]): Weights => ({ p: { shape: [a.length], data: new Float32Array(a) } });
const f = Math.fround;
const close = (a: number, b: number, rel = 1e-6) => assert.ok(Math.abs(a - b) <= rel * Math.max(1, Math.abs(b)), `${a} vs ${b}`);

/** Two rounds of a FedOpt rule computed by hand in float64 (the float32 code must agree closely). */
function byHand(rule: 'adam' | 'yogi' | 'adagrad', eta: number, d1: number, d2: number) {
  const b1 = 0.9, b2 = 0.999, tau = 1e-8;
  let m = 0, v = 0, x = 0;
  for (const d of [d1, d2]) {
    m = b1 * m + (1 - b1) * d;
    if (rule === 'adam') v = b2 * v + (1 - b2) * d * d;
    else if (rule === 'yogi') v = v - (1 - b2) * d * d * Math.sign(v - d * d);
    else v = v + d * d;
    x += (eta * m) / (Math.sqrt(v) + tau);
  }
  return x;
}

for (const [name, rule, eta] of [['FedAdam', 'adam', 0.01], ['FedYogi', 'yogi', 0.01], ['FedAdagrad', 'adagrad', 0.316228]] as const) {
  test(`${name}: FLamby's server rule without bias correction, two rounds by hand`, () => {
    const s = createStrategy(name);
    const x1 = s.aggregateFit(1, V(0), [{ siteId: 'a', weights: V(0.2), numExamples: 1 }]).weights;
    const x1v = x1['p']!.data[0]!;
    const x2 = s.aggregateFit(2, x1, [{ siteId: 'a', weights: V(f(x1v - 0.05)), numExamples: 1 }]).weights;
    // Round 2's delta is the float32 difference the code sees.
    close(x2['p']!.data[0]!, byHand(rule, eta, 0.2, f(f(x1v - 0.05) - x1v)));
  });

  test(`${name}: state round-trips so a restarted coordinator continues exactly`, () => {
    const a = createStrategy(name);
    let x = V(0.1, -0.2);
    x = a.aggregateFit(1, x, [{ siteId: 's', weights: V(0.3, 0.1), numExamples: 5 }]).weights;
    const st = a.getState();
    const b = createStrategy(name);
    b.setState({ json: JSON.parse(JSON.stringify(st.json)), tensors: st.tensors });
    const r = [{ siteId: 's', weights: V(0.5, 0.5), numExamples: 5 }];
    assert.deepEqual(b.aggregateFit(2, x, r).weights, a.aggregateFit(2, x, r).weights);
    assert.throws(() => createStrategy('FedAvg').setState(st), /belongs to strategy/);
  });
}

test('FedAdam defaults are FLamby heart values and client lr travels in the task', () => {
  const s = createStrategy('FedAdam');
  assert.equal(s.configureFit(1, V(0), ['a'])[0]!.config.optimizer.lr, 0.01);
  assert.equal(createStrategy('FedYogi').configureFit(1, V(0), ['a'])[0]!.config.optimizer.lr, 0.003162);
  assert.equal(createStrategy('FedAdam', { lr: 0.5 }).configureFit(1, V(0), ['a'])[0]!.config.optimizer.lr, 0.5);
});
