import { test } from 'node:test';
import assert from 'node:assert/strict';
import { STRATEGY_NAMES, createStrategy } from './registry.js';

test('every registered strategy builds with defaults and round-trips its state', () => {
  for (const n of STRATEGY_NAMES) {
    const s = createStrategy(n);
    assert.equal(s.name, n);
    const st = s.getState();
    s.setState(JSON.parse(JSON.stringify({ json: st.json, tensors: {} })));
  }
});

test('unknown strategy, unknown parameter and bad values are named', () => {
  assert.throws(() => createStrategy('FedMagic'), /unknown strategy "FedMagic" \(known: FedAvg/);
  assert.throws(() => createStrategy('FedAdam', { serverLR: 1 }), /FedAdam: unknown parameter "serverLR"/);
  assert.throws(() => createStrategy('FedProx', { mu: -1 }), /FedProx: parameter "mu" must be >= 0, got -1/);
  assert.throws(() => createStrategy('FedAvg', { fraction: 0 }), /parameter "fraction" must be > 0/);
  assert.throws(() => createStrategy('FedAvg', { localSteps: 10, epochs: 1 }), /either "localSteps" or "epochs"/);
  assert.throws(() => createStrategy('FedAvg', { weighting: 'size' }), /"weighting" must be one of "examples", "equal"/);
  assert.throws(() => createStrategy('SCAFFOLD', { optimizer: 'adam' }), /plain SGD/);
  assert.throws(() => createStrategy('FedAvg', { sites: [] }), /non-empty list/);
});

test('names are case-insensitive', () => {
  assert.equal(createStrategy('fedavg').name, 'FedAvg');
  assert.equal(createStrategy('Scaffold').name, 'SCAFFOLD');
});

test('restart: every strategy restored from getState() continues exactly as the original', () => {
  const sites = ['a', 'b', 'c', 'd', 'e', 'f'];
  const resultFor = (siteId: string, round: number, x: Record<string, { shape: number[]; data: Float32Array }>) => {
    // A deterministic pseudo-update: x plus a site- and round-specific perturbation.
    const h = siteId.charCodeAt(0) * 31 + round * 7;
    const data = x['p']!.data.map((v, i) => v + Math.sin(h + i) * 0.1);
    return { siteId, weights: { p: { shape: [3], data } }, numExamples: 10 + (h % 13) };
  };
  for (const name of STRATEGY_NAMES) {
    const params = name === 'Cyclic' ? { seed: 9 } : { fraction: 1, seed: 9 };
    const a = createStrategy(name, params);
    let x = { p: { shape: [3], data: new Float32Array([0.1, -0.2, 0.3]) } };
    const step = (s: typeof a, r: number, w: typeof x) => s.aggregateFit(r, w, s.configureFit(r, w, sites).map((t) => resultFor(t.siteId, r, w))).weights as typeof x;
    x = step(a, 1, x);
    const saved = a.getState();
    const b = createStrategy(name, params);
    b.setState({ json: JSON.parse(JSON.stringify(saved.json)), tensors: Object.fromEntries(Object.entries(saved.tensors).map(([k, t]) => [k, { shape: [...t.shape], data: new Float32Array(t.data) }])) });
    let xa = x, xb = x;
    for (let r = 2; r <= 4; r++) {
      xa = step(a, r, xa);
      xb = step(b, r, xb);
    }
    assert.deepEqual(xb, xa, name);
  }
});
