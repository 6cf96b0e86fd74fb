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
