import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fit, trainCentral } from './client.js';
import { BatchStream } from './batches.js';
import { LogisticRegression } from './models/logistic.js';
import { createRng } from './rng.js';
import { cloneWeights, sub, zerosLike } from './weights.js';
import type { Dataset, FitConfig } from './types.js';

function data(n: number, d: number, seed: number): Dataset {
  const r = createRng(seed);
  const x = new Float32Array(n * d), y = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let z = 0;
    for (let j = 0; j < d; j++) z += (x[i * d + j] = r.normal()) * (j + 1) * 0.5;
    y[i] = r.next() < 1 / (1 + Math.exp(-z)) ? 1 : 0;
  }
  return { x, n, d, y };
}

const model = new LogisticRegression(3);
const ds = data(23, 3, 1);
const w0 = model.init(createRng(2));
const sgd: FitConfig = { localSteps: 7, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.1 } };

/** Reference: plain loop of SGD steps on the same batches. */
function manualSgd(steps: number, seed: number, extraGrad?: (w: typeof w0, g: typeof w0) => void) {
  const s = BatchStream.create(ds.n, 4, seed), w = cloneWeights(w0);
  for (let i = 0; i < steps; i++) {
    const g = zerosLike(w);
    model.lossAndGrad(w, ds, s.next(), g);
    extraGrad?.(w, g);
    for (const k of Object.keys(w)) for (let j = 0; j < w[k]!.data.length; j++) w[k]!.data[j]! -= 0.1 * g[k]!.data[j]!;
  }
  return w;
}

test('fit makes k SGD steps on the stream and does not touch the global weights', () => {
  const before = cloneWeights(w0);
  const out = fit({ model, weights: w0, data: ds, config: sgd, stream: BatchStream.create(ds.n, 4, 5) });
  assert.deepEqual({ ...w0 }, { ...before });
  assert.equal(out.numExamples, 23);
  assert.equal(out.steps, 7);
  assert.deepEqual({ ...out.weights }, { ...manualSgd(7, 5) });
});

test('the stream carries over: two rounds of 7 equal one run of 14 from the same weights path', () => {
  const s = BatchStream.create(ds.n, 4, 5);
  const r1 = fit({ model, weights: w0, data: ds, config: sgd, stream: s });
  const r2 = fit({ model, weights: r1.weights, data: ds, config: sgd, stream: s });
  assert.deepEqual(r2.weights, manualSgd(14, 5));
});

test('FedProx adds mu (w - x) to the gradient', () => {
  const mu = 0.5;
  const out = fit({ model, weights: w0, data: ds, config: { ...sgd, proximalMu: mu }, stream: BatchStream.create(ds.n, 4, 5) });
  const ref = manualSgd(7, 5, (w, g) => {
    for (const k of Object.keys(w)) for (let j = 0; j < w[k]!.data.length; j++) g[k]!.data[j]! += mu * (w[k]!.data[j]! - w0[k]!.data[j]!);
  });
  for (const k of Object.keys(ref)) for (let j = 0; j < ref[k]!.data.length; j++) assert.ok(Math.abs(ref[k]!.data[j]! - out.weights[k]!.data[j]!) < 1e-6);
  assert.notDeepEqual(out.weights, manualSgd(7, 5));
});

test('SCAFFOLD (FLamby): first round is plain SGD; the control variate follows c += (x - yhat)/(ηs ηl K)', () => {
  const cfg: FitConfig = { ...sgd, extra: { scaffold: true, serverLr: 1 } };
  const s = BatchStream.create(ds.n, 4, 5);
  const r1 = fit({ model, weights: w0, data: ds, config: cfg, stream: s });
  assert.deepEqual(r1.weights, manualSgd(7, 5));
  const st = r1.clientState!;
  assert.deepEqual(st['control.weight']!.data, new Float32Array(3));
  assert.deepEqual(st['prevLocal.bias']!.data, r1.weights['bias']!.data);
  // Round 2 from a different global x: c = (x − ŷ)/(1·0.1·7), steps use ∇ − c.
  const x = cloneWeights(w0);
  x['bias']!.data[0]! += 0.3;
  const s2 = BatchStream.restore(s.state()), sRef = BatchStream.restore(s.state());
  const r2 = fit({ model, weights: x, data: ds, config: cfg, stream: s2, clientState: JSON.parse(JSON.stringify(st), (_k, v) => (v && v.data && !Array.isArray(v.data) ? { shape: v.shape, data: new Float32Array(Object.values(v.data)) } : v)) });
  const c = sub(x, r1.weights);
  for (const k of Object.keys(c)) for (let j = 0; j < c[k]!.data.length; j++) c[k]!.data[j]! /= 0.7;
  const w = cloneWeights(x);
  for (let i = 0; i < 7; i++) {
    const g = zerosLike(w);
    model.lossAndGrad(w, ds, sRef.next(), g);
    for (const k of Object.keys(w)) for (let j = 0; j < w[k]!.data.length; j++) w[k]!.data[j]! -= 0.1 * (g[k]!.data[j]! - c[k]!.data[j]!);
  }
  for (const k of Object.keys(w)) {
    for (let j = 0; j < w[k]!.data.length; j++) {
      assert.ok(Math.abs(w[k]!.data[j]! - r2.weights[k]!.data[j]!) < 1e-6);
      assert.ok(Math.abs(r2.clientState![`control.${k}`]!.data[j]! - c[k]!.data[j]!) < 1e-5);
    }
  }
});

test('SCAFFOLD with ηs ≠ 1 mixes the local model with the global one', () => {
  const cfg: FitConfig = { ...sgd, extra: { scaffold: true, serverLr: 0.5 } };
  const r = fit({ model, weights: w0, data: ds, config: cfg, stream: BatchStream.create(ds.n, 4, 5) });
  const plain = manualSgd(7, 5);
  for (const k of Object.keys(plain)) for (let j = 0; j < plain[k]!.data.length; j++) {
    assert.ok(Math.abs(r.weights[k]!.data[j]! - (0.5 * plain[k]!.data[j]! + 0.5 * w0[k]!.data[j]!)) < 1e-6);
  }
});

test('fit validates its config', () => {
  const s = BatchStream.create(ds.n, 4, 5);
  assert.throws(() => fit({ model, weights: w0, data: ds, config: { batchSize: 4, optimizer: { kind: 'sgd', lr: 0.1 } }, stream: s }), /localSteps or epochs/);
  assert.throws(() => fit({ model, weights: w0, data: ds, config: { ...sgd, batchSize: 8 }, stream: s }), /batch size/);
  assert.throws(() => fit({ model, weights: w0, data: ds, config: sgd, stream: BatchStream.create(5, 4, 1) }), /stream covers 5 rows/);
});

test('central Adam training reduces the loss and is deterministic for a seed', () => {
  const big = data(200, 3, 9);
  const a = trainCentral({ model, weights: w0, data: big, epochs: 20, batchSize: 4, optimizer: { kind: 'adam', lr: 0.01 }, seed: 42 });
  const b = trainCentral({ model, weights: w0, data: big, epochs: 20, batchSize: 4, optimizer: { kind: 'adam', lr: 0.01 }, seed: 42 });
  assert.deepEqual(a.weights, b.weights);
  assert.ok(model.evaluate(a.weights, big).loss < model.evaluate(w0, big).loss - 0.05);
});
