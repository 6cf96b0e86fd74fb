import { test } from 'node:test';
import assert from 'node:assert/strict';
import { heartPopulation, parseSimArgs, runSim, syntheticNonIid, type SimOptions } from './sim.js';

const base: SimOptions = {
  sites: 200, sample: 10, rounds: 8, partition: 'synthetic-noniid', strategy: 'FedAvg',
  lr: 0.05, localSteps: 10, batchSize: 8, features: 10, seed: 1,
};

test('virtual sites are generated deterministically from their id and differ between ids', () => {
  const p = syntheticNonIid(3, 5), q = syntheticNonIid(3, 5);
  assert.deepEqual(p.siteData(17), q.siteData(17));
  assert.notDeepEqual(p.siteData(17).x, p.siteData(18).x);
  const h = heartPopulation(3);
  const s = h.siteData(6);
  assert.equal(s.d, 13);
  assert.ok(s.n >= 4 && s.n <= 16);
});

test('a small simulation is deterministic, samples K sites per round and learns', () => {
  const a = runSim(base), b = runSim(base);
  assert.deepEqual(a.rounds.map((r) => r.testAccuracy), b.rounds.map((r) => r.testAccuracy));
  assert.ok(a.rounds.every((r) => r.sites === 10));
  assert.ok(a.sitesSeen > 10 && a.sitesSeen <= 80);
  assert.ok(a.final.loss < a.initial.loss - 0.01, `loss ${a.initial.loss} → ${a.final.loss}`);
});

test('robust and stateful strategies run in the simulator too', () => {
  for (const strategy of ['Median', 'SCAFFOLD', 'FedAdam']) {
    const r = runSim({ ...base, strategy, rounds: 3 });
    assert.equal(r.rounds.length, 3, strategy);
    assert.ok(Number.isFinite(r.final.loss), strategy);
  }
  const h = runSim({ ...base, partition: 'heart', rounds: 3 });
  assert.ok(h.final.accuracy > 0.5);
});

test('argument errors are named', () => {
  assert.throws(() => parseSimArgs(['--sites', 'many']), /--sites must be an integer/);
  assert.throws(() => parseSimArgs(['--partition', 'iid']), /--partition must be/);
  assert.throws(() => parseSimArgs(['--what']), /unknown option "--what"/);
  assert.throws(() => runSim({ ...base, sample: 300 }), /cannot exceed/);
  assert.throws(() => runSim({ ...base, strategy: 'Nope' }), /unknown strategy "Nope"/);
});
