/**
 * 1,000 concurrent signed reads at a coordinator on PostgreSQL all answer 200, in each of several runs, beside a
 * coordinator on SQLite measured in the same run (real processes, real HTTP: `setu bench reads`). It used to stall:
 * hundreds of requests hung for a minute. No timing threshold here (a loaded 2-core machine would make one flaky):
 * the figures are printed, and the bench states the ratio; every request must answer within a generous bound.
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { failures, main, runReadsBench } from './reads.js';
import { PG_BASE } from '../../testing/pg.js';
import { pgSkipReason } from '../../testing/pg.js';

const REQUESTS = 1000;
const RUNS = 3;

it(`${REQUESTS} concurrent signed GET /v1/studies: none fails or hangs, on PostgreSQL and on SQLite (${RUNS} runs each)`, { skip: await pgSkipReason(), timeout: 15 * 60_000 }, async (t) => {
  const r = await runReadsBench({ requests: REQUESTS, runs: RUNS, path: '/v1/studies', pg: PG_BASE, timeoutMs: 120_000, log: (s) => t.diagnostic(s) });
  t.diagnostic(`PostgreSQL / SQLite: p50 ${r.ratio.p50.toFixed(2)}×, p99 ${r.ratio.p99.toFixed(2)}×`);
  for (const [backend, runs] of [['sqlite', r.sqlite], ['postgres', r.postgres]] as const) {
    assert.equal(runs.length, RUNS);
    for (const [i, run] of runs.entries()) {
      assert.equal(failures(run), 0, `${backend} run ${i + 1}: ${run.hung} hung, failed ${JSON.stringify(run.failed)}`);
      assert.equal(run.ok, REQUESTS);
    }
  }
});

it('bad options are a usage error (exit 2)', async () => {
  const err = process.stderr.write.bind(process.stderr);
  let said = '';
  process.stderr.write = ((c: string) => ((said += c), true)) as typeof process.stderr.write;
  try {
    assert.equal(await main(['--requests', 'many']), 2);
    assert.equal(await main(['--path', 'studies']), 2);
  } finally {
    process.stderr.write = err;
  }
  assert.match(said, /--requests must be a positive integer, got "many"/);
  assert.match(said, /--path must be an API path/);
});
