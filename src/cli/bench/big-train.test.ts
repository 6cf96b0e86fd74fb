/**
 * `setu bench big-train` kept from rotting, at a small size: real coordinator and agent processes, real Python
 * trainers (the SDK). Each run must commit the exact weighted mean and report every process's peak RSS; a killed
 * agent must resume its upload where the coordinator's answer left it (fewer bytes sent again than the update's), a
 * killed coordinator must keep every accepted update and partial upload. The figures are printed, not judged against
 * the RSS goal (a loaded 2-core machine's timing is not the point here; the memory goal is the bench's own verdict).
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { main, runBigTrain, table, type BigTrainResult } from './big-train.js';

function reported(r: BigTrainResult, sites: number): void {
  assert.equal(r.exact, true, `the committed model is ${r.maxUlp} ulp from the weighted mean`);
  assert.ok(r.maxUlp <= 0.5);
  assert.ok(r.roundMs > 0 && r.coordinatorPeakRssBytes > 0 && r.setupPeakRssBytes > 0, 'coordinator figures measured');
  assert.equal(r.rssGoalBytes, 2 * r.modelBytes + 300e6);
  assert.equal(r.agents.length, sites);
  assert.equal(r.trainers.length, sites);
  assert.deepEqual(r.releasePaths, Array(sites).fill('file'), 'a plain study takes the file-to-file release');
  for (const p of [...r.agents, ...r.trainers]) assert.ok(p.peakRssBytes > 10e6, `${p.name}: peak RSS ${p.peakRssBytes} measured`);
  assert.match(table(r), /coordinator peak RSS \(round\) .* ≤ 2 × model \+ 300 MB/);
}

it('a round of 4 agents with Python trainers commits the exact weighted mean; every peak RSS reported', { timeout: 120_000 }, async (t) => {
  const r = await runBigTrain({ params: 2_000_000, sites: 4, log: (s) => t.diagnostic(s) });
  t.diagnostic(table(r));
  reported(r, 4);
  assert.equal(r.modelBytes, 8_000_000);
});

it('--kill-agent: the agent killed mid-upload resumes at the byte the coordinator holds', { timeout: 120_000 }, async (t) => {
  const r = await runBigTrain({ params: 3_000_000, sites: 4, killAgent: true, log: (s) => t.diagnostic(s) });
  t.diagnostic(table(r));
  reported(r, 4);
  const k = r.killAgent!;
  assert.ok(k.killedAtBytes > 0 && k.killedAtBytes < k.sizeBytes, `killed mid-upload (${k.killedAtBytes} of ${k.sizeBytes})`);
  assert.ok(k.resumedAtBytes >= k.killedAtBytes, `resumed at ${k.resumedAtBytes}, not before the ${k.killedAtBytes} bytes held`);
  assert.ok(k.resentBytes < k.sizeBytes, 'fewer bytes sent again than the whole update');
  assert.match(table(r), /resumed at byte \d+ of \d+: \d+ bytes re-sent/);
});

it('--kill-coordinator: the round commits after the restart; accepted updates and partial uploads are kept', { timeout: 120_000 }, async (t) => {
  const r = await runBigTrain({ params: 3_000_000, sites: 4, killCoordinator: true, log: (s) => t.diagnostic(s) });
  t.diagnostic(table(r));
  reported(r, 4);
  const k = r.killCoordinator!;
  assert.equal(k.acceptedKept, true);
  assert.equal(k.sitesInRound, 4);
  assert.ok(k.partialBytesBeforeKill > 0, 'the slow site was mid-upload at the kill');
  const slow = k.resumedAt.find((x) => x.site === 'big-site-0');
  assert.ok(slow && slow.resumedAtBytes >= k.partialBytesBeforeKill, `big-site-0 went on from ${slow?.resumedAtBytes}, holding ${k.partialBytesBeforeKill} before the kill`);
});

it('bad options are a usage error (exit 2)', async () => {
  const err = process.stderr.write.bind(process.stderr);
  let said = '';
  process.stderr.write = ((c: string) => ((said += c), true)) as typeof process.stderr.write;
  try {
    assert.equal(await main(['--params', 'lots']), 2);
    assert.equal(await main(['--sites', '0']), 2);
    assert.equal(await main(['--params', '1000000', '--kill-agent']), 2);
  } finally {
    process.stderr.write = err;
  }
  assert.match(said, /--params must be an integer from 1,000 to 500,000,000, got "lots"/);
  assert.match(said, /--sites must be an integer from 1 to 64, got "0"/);
  assert.match(said, /--kill-agent and --kill-coordinator need a chunked upload/);
});
