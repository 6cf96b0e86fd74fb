/**
 * `setu demo` with its privacy flags: SecAgg+ and sample-level DP-SGD at a target (ε, δ) on the real federation
 * (four agent processes, signed requests), and the report states what each site spent. Bad flags are refused
 * before anything starts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { SETU_MAIN } from '../testing/processes.js';
import type { DemoOutput } from './demo.js';

const run = promisify(execFile);

test('setu demo --secagg --dp-epsilon 1 reports the (ε, δ) each site spent', { timeout: 120_000 }, async () => {
  const { stdout, stderr } = await run(process.execPath, [SETU_MAIN, 'demo', '--json', '--seed', '42', '--rounds', '4', '--secagg', '--dp-epsilon', '1', '--dp-delta', '1e-3'], { timeout: 110_000, maxBuffer: 1 << 20 });
  const out = JSON.parse(stdout.trim()) as DemoOutput;
  assert.match(stderr, /SecAgg\+, DP-SGD at ε=1, δ=0\.001/);
  assert.ok(out.privacy, 'the report has a privacy field');
  assert.equal(out.privacy.secagg, true);
  const dp = out.privacy.dp!;
  assert.equal(dp.level, 'sample');
  assert.equal(dp.epsilon, 1);
  assert.equal(dp.delta, 1e-3);
  assert.deepEqual(Object.keys(dp.spent), ['cleveland', 'hungarian', 'switzerland', 'va']);
  // σ is planned so that all the study's rounds cost the target: after the last round each site is just under it.
  for (const [site, eps] of Object.entries(dp.spent)) assert.ok(eps > 0.95 && eps <= 1, `${site} spent ε=${eps}`);
  const acc = out.results['FedAvg']!.pooledTest;
  assert.ok(acc > 0.6 && acc <= 1, `the private federation still learns (${acc})`);
});

test('setu demo refuses bad privacy flags before starting anything', async () => {
  for (const [args, msg] of [
    [['--dp-epsilon', '0'], /--dp-epsilon must be a number in \(0, 1000\]/],
    [['--dp-epsilon', '1', '--dp-level', 'example'], /--dp-level must be sample or client/],
    [['--dp-delta', '1e-5'], /need --dp-epsilon/],
  ] as const) {
    const e = await run(process.execPath, [SETU_MAIN, 'demo', ...args], { timeout: 20_000 }).then(() => undefined, (x: { code: number; stderr: string }) => x);
    assert.ok(e, `${args.join(' ')} is refused`);
    assert.notEqual(e.code, 0);
    assert.match(e.stderr, msg);
    assert.doesNotMatch(e.stderr, /coordinator on/, 'nothing started');
  }
});
