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
