/**
 * Federated Cox regression recovers a known hazard.
 *
 * Data: exponential event times with log-hazard log λ0_k + xᵀβ, independent exponential
 * censoring, over four sites that differ in size, feature means and baseline hazard λ0_k.
 * Each site's partial likelihood uses only its own risk sets, so the federation fits a Cox
 * model stratified by site: the site baselines cancel and β is identified.
 *
 * Training: the project's FedAvg strategy and client `fit`, each local step a full pass over
 * the site's rows (batch larger than any site), so the only errors left are statistical.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BatchStream } from '../batches.js';
import { fit } from '../client.js';
import { cIndex } from '../metrics/cindex.js';
import { createRng, deriveSeed } from '../rng.js';
import { createStrategy } from '../strategies/registry.js';
import type { Dataset } from '../types.js';
import { Cox } from './cox.js';

const BETA = [0.8, -0.5, 0.3];

function site(n: number, seed: number, shift: number, baseline: number): Dataset {
  const rng = createRng(seed);
  const d = BETA.length;
  const x = new Float32Array(n * d), time = new Float32Array(n), event = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let eta = 0;
    for (let j = 0; j < d; j++) {
      const v = shift + rng.normal();
      x[i * d + j] = v;
      eta += BETA[j]! * v;
    }
    const t = -Math.log(1 - rng.next()) / (baseline * Math.exp(eta));
    const c = -Math.log(1 - rng.next()) / (0.4 * baseline); // about a third censored
    time[i] = Math.min(t, c);
    event[i] = t <= c ? 1 : 0;
  }
  return { x, n, d, y: new Float32Array(event), time, event };
}

test('FedAvg over 4 sites recovers β and the true model\'s C-index on held-out data', () => {
  const sites = [site(1400, 1, 0, 0.5), site(1000, 2, 0.3, 1), site(800, 3, -0.2, 2), site(600, 4, 0.1, 1.5)];
  const ids = ['hosp-a', 'hosp-b', 'hosp-c', 'hosp-d'];
  const model = new Cox({ kind: 'cox', inputDim: 3 });
  const strategy = createStrategy('FedAvg', { lr: 0.3, localSteps: 5, batchSize: 100_000, seed: 7 });
  const streams = sites.map((s, k) => BatchStream.create(s.n, 100_000, deriveSeed(7, 'site', k)));
  let global = model.init(createRng(7));
  for (let round = 1; round <= 40; round++) {
    const tasks = strategy.configureFit(round, global, ids);
    const results = tasks.map((t) => {
      const k = ids.indexOf(t.siteId);
      const out = fit({ model, weights: global, data: sites[k]!, config: t.config, stream: streams[k]! });
      return { siteId: t.siteId, weights: out.weights, numExamples: out.numExamples, loss: out.loss };
    });
    global = strategy.aggregateFit(round, global, results).weights;
  }
  const beta = Array.from(global['layers.0.weight']!.data);
  // 3800 rows, ~2500 events, unit-variance features: each coefficient's standard error is about
  // 1/√2500 = 0.02. A tolerance of 0.08 (4 SE) fails a biased fit, not an unlucky draw — and the
  // seeds are fixed, so the test is deterministic.
  const events = sites.reduce((a, s) => a + s.event!.reduce((u, v) => u + v, 0), 0);
  assert.ok(events > 2000, `events ${events}`);
  beta.forEach((b, j) => assert.ok(Math.abs(b - BETA[j]!) < 0.08, `β${j} = ${b}, true ${BETA[j]}`));

  const test = site(3000, 99, 0, 1);
  const trueRisk = Array.from({ length: test.n }, (_, i) => BETA.reduce((a, b, j) => a + b * test.x[i * 3 + j]!, 0));
  const cTrue = cIndex(trueRisk, test.time!, test.event!);
  const cFed = model.evaluate(global, test).cIndex!;
  // The C-index is flat around the optimum: coefficient errors of a few SE move it by well
  // under 0.01, while a model with one coefficient's sign wrong loses several points.
  assert.ok(Math.abs(cFed - cTrue) < 0.01, `C-index ${cFed} vs true model ${cTrue}`);
  assert.ok(cTrue > 0.65);
});
