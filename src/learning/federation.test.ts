import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runFederation, type LocalSite } from './federation.js';
import { BatchStream } from './batches.js';
import { fit } from './client.js';
import { LogisticRegression } from './models/logistic.js';
import { createRng } from './rng.js';
import { createStrategy } from './strategies/registry.js';
import type { Dataset } from './types.js';

function data(n: number, seed: number): Dataset {
  const r = createRng(seed);
  const x = Float32Array.from({ length: n * 3 }, () => r.normal());
  const y = Float32Array.from({ length: n }, () => (r.next() < 0.5 ? 1 : 0));
  return { x, n, d: 3, y };
}

test('one FedAvg round equals the example-weighted mean of the sites\' fits', () => {
  const model = new LogisticRegression(3), w0 = model.init(createRng(1));
  const d0 = data(10, 2), d1 = data(30, 3);
  const sites: LocalSite[] = [
    { id: 'b', data: d1, stream: BatchStream.create(30, 4, 5) },
    { id: 'a', data: d0, stream: BatchStream.create(10, 4, 4) },
  ];
  const strategy = createStrategy('FedAvg', { lr: 0.1, localSteps: 5, batchSize: 4 });
  const reports: number[] = [];
  const w = runFederation({ model, strategy, initial: w0, rounds: 1, sites, onRound: (r) => reports.push(r.sites) });
  const cfg = { localSteps: 5, batchSize: 4, optimizer: { kind: 'sgd' as const, lr: 0.1 } };
  const ya = fit({ model, weights: w0, data: d0, config: cfg, stream: BatchStream.create(10, 4, 4) }).weights;
  const yb = fit({ model, weights: w0, data: d1, config: cfg, stream: BatchStream.create(30, 4, 5) }).weights;
  for (const k of Object.keys(w0)) for (let i = 0; i < w0[k]!.data.length; i++) {
    assert.ok(Math.abs(w[k]!.data[i]! - (10 * ya[k]!.data[i]! + 30 * yb[k]!.data[i]!) / 40) < 1e-7);
  }
  assert.deepEqual(reports, [2]);
  assert.throws(() => runFederation({ model, strategy, initial: w0, rounds: 0, sites }), /rounds must be/);
});
