/**
 * `setu bench async-heart` at a small size, so it does not rot: both studies complete with real agents (one slow),
 * every version is evaluated and timed, the target is the synchronous study's final accuracy and the report names
 * each mode's time to it. No timing threshold (a loaded 2-core machine would make one flaky): the bench states it.
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { formatResult, main, runAsyncHeartBench } from './async-heart.js';

it('the synchronous and the asynchronous heart studies both run and are compared on time to the same accuracy', { timeout: 10 * 60_000 }, async (t) => {
  const r = await runAsyncHeartBench({ rounds: 2, versions: 4, buffer: 2, slowMs: 500, localSteps: 5, lr: 0.05, log: (s) => t.diagnostic(s) });
  assert.deepEqual(r.sync.points.map((p) => p.version), [0, 1, 2]);
  assert.deepEqual(r.async.points.map((p) => p.version), [0, 1, 2, 3, 4]);
  assert.equal(r.target, r.sync.points.at(-1)!.accuracy);
  assert.ok(r.sync.reached && r.sync.reached.accuracy >= r.target - 1e-9, 'the synchronous study reaches its own final accuracy');
  for (const m of [r.sync, r.async]) {
    for (const p of m.points) assert.ok(p.accuracy > 0 && p.accuracy <= 1 && p.seconds >= 0, JSON.stringify(p));
    assert.ok(m.points.every((p, i) => i === 0 || p.seconds >= m.points[i - 1]!.seconds), 'versions in time order');
  }
  if (r.async.reached) assert.equal(r.speedup, r.sync.reached!.seconds / r.async.reached.seconds);
  const text = formatResult(r);
  t.diagnostic(text);
  assert.match(text, /synchronous FedAvg +2 rounds/);
  assert.match(text, /asynchronous FedBuff \(K=2\) +4 versions/);
});

it('bad options are a usage error (exit 2)', async () => {
  const err = process.stderr.write.bind(process.stderr);
  let said = '';
  process.stderr.write = ((c: string) => ((said += c), true)) as typeof process.stderr.write;
  try {
    assert.equal(await main(['--buffer', '5']), 2);
    assert.equal(await main(['--versions', 'many']), 2);
  } finally {
    process.stderr.write = err;
  }
  assert.match(said, /--buffer must be at most 4/);
  assert.match(said, /--versions must be an integer ≥ 1, got "many"/);
});
