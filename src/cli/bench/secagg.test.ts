import { test } from 'node:test';
import assert from 'node:assert/strict';
import { main } from './secagg.js';

test('bench secagg runs end to end on a small federation and reports JSON with the result check passed', async () => {
  const lines: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => { lines.push(a.join(' ')); };
  try {
    assert.equal(await main(['--sites', '5', '--params', '2000', '--json']), 0);
  } finally {
    console.log = log;
  }
  const out = JSON.parse(lines.join('\n'));
  assert.equal(out.rows.length, 1);
  const r = out.rows[0];
  assert.equal(r.sites, 5);
  assert.ok(r.params >= 1900 && r.params <= 2100);
  assert.ok(r.maxAbsDiff <= 5 * r.quantStep);
  assert.ok(r.plainMs > 0 && r.secaggMs > 0 && r.ratio > 0);
  await assert.rejects(main(['--sites', '2']), /at least 3/);
  await assert.rejects(main(['--params', 'x']), /positive integers/);
});

test('bench secagg --coordinator unmasks a round from blobs block by block and reports time, RSS and throughput against the one-block path', async () => {
  const lines: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => { lines.push(a.join(' ')); };
  try {
    assert.equal(await main(['--coordinator', '--sites', '4', '--params', '5000', '--block-words', '333', '--json']), 0);
  } finally {
    console.log = log;
  }
  const out = JSON.parse(lines.join('\n'));
  assert.equal(out.mode, 'coordinator');
  assert.equal(out.loadAverage.before.length, 3);
  const r = out.rows[0];
  assert.deepEqual([r.sites, r.survivors, r.params, r.blockWords, r.maxAbsDiff], [4, 3, 5000, 333, 0]);
  assert.equal(r.maskedBytes, 3 * 5001 * 4);
  assert.ok(r.streamedS > 0 && r.oneBlockS > 0 && r.streamedPeakRssMiB > 0 && r.streamedMiBps > 0);
  await assert.rejects(main(['--coordinator', '--sites', '2']), /at least 3/);
});
