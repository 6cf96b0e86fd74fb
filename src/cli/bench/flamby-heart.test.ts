import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HEART_PROTOCOL, loadHeartReference, main, parseMethods, parseSeeds, runHeartBenchmark, summarize } from './flamby-heart.js';

test('protocol constants are FLamby\'s', () => {
  assert.equal(HEART_PROTOCOL.rounds, 15);
});

test('seed and method parsing', () => {
  assert.deepEqual(parseSeeds('42-44,50'), [42, 43, 44, 50]);
  assert.throws(() => parseSeeds('4x'), /not an integer/);
  assert.deepEqual(parseMethods('local,scaffold'), ['Local0', 'Local1', 'Local2', 'Local3', 'Scaffold']);
  assert.throws(() => parseMethods('FedMagic'), /unknown method "FedMagic"/);
});

test('reference figures are read from the bundled CSVs', () => {
  const ref = loadHeartReference();
  assert.equal(ref.peer['FedAvg']!.n, 20);
  assert.ok(Math.abs(ref.peer['FedAvg']!.mean - 0.7431) < 1e-4);
  assert.ok(Math.abs(ref.peer['Pooled']!.sd - 0.0041) < 1e-4);
  assert.equal(ref.flamby['Cyclic']!.n, 5);
});

test('a run is deterministic for a seed', () => {
  const a = runHeartBenchmark({ seeds: [42], methods: ['FedAvg', 'Pooled'] });
  const b = runHeartBenchmark({ seeds: [42], methods: ['FedAvg', 'Pooled'] });
  assert.deepEqual(a.map((r) => r.accuracy), b.map((r) => r.accuracy));
  const s = summarize(a);
  assert.ok(s['Pooled']!.mean > 0.75, `pooled ${s['Pooled']!.mean}`);
});

test('--json prints only the methods object on stdout; CSV and SVG are written', async () => {
  const out = mkdtempSync(join(tmpdir(), 'fh-'));
  const chunks: string[] = [];
  const write = process.stdout.write.bind(process.stdout), ewrite = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((c: string) => (chunks.push(String(c)), true)) as typeof process.stdout.write;
  process.stderr.write = (() => true) as typeof process.stderr.write;
  let code: number;
  try {
    code = await main(['--seeds', '42,43', '--methods', 'FedAdam,Local2', '--json', '--out', out]);
  } finally {
    process.stdout.write = write;
    process.stderr.write = ewrite;
  }
  assert.equal(code, 0);
  const j = JSON.parse(chunks.join(''));
  assert.deepEqual(Object.keys(j), ['methods']);
  assert.deepEqual(Object.keys(j.methods), ['FedAdam', 'Local2']);
  assert.equal(j.methods.FedAdam.n, 2);
  for (const k of ['mean', 'sd', 'n', 'seconds']) assert.equal(typeof j.methods.FedAdam[k], 'number');
  assert.match(readFileSync(join(out, 'flamby-heart.svg'), 'utf8'), /^<svg[^>]+xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.equal(readFileSync(join(out, 'flamby-heart-runs.csv'), 'utf8').trim().split('\n').length, 1 + 2 * 2 * 5);
});

test('bad options exit 2 with a message', async () => {
  const ewrite = process.stderr.write.bind(process.stderr);
  let err = '';
  process.stderr.write = ((c: string) => ((err += c), true)) as typeof process.stderr.write;
  try {
    assert.equal(await main(['--bogus']), 2);
  } finally {
    process.stderr.write = ewrite;
  }
  assert.match(err, /unknown option "--bogus"/);
});

test('done-criterion: over seeds 42–61 every method\'s pooled-test mean lies within the peer\'s mean ± sd', () => {
  const ref = loadHeartReference();
  const methods = ['Pooled', 'Local0', 'Local1', 'Local2', 'Local3', 'FedAvg', 'FedProx', 'FedAdam', 'FedYogi', 'FedAdagrad', 'Scaffold'];
  const seeds = Array.from({ length: 20 }, (_, i) => 42 + i);
  const s = summarize(runHeartBenchmark({ seeds, methods }));
  for (const m of methods) {
    const p = ref.peer[m]!;
    assert.ok(Math.abs(s[m]!.mean - p.mean) <= p.sd, `${m}: Setu ${s[m]!.mean.toFixed(4)} vs peer ${p.mean.toFixed(4)} ± ${p.sd.toFixed(4)}`);
  }
  // Cyclic has no peer figure; FLamby's published Cyclic is client 0's private model (see CyclicFLamby).
  const c = summarize(runHeartBenchmark({ seeds, methods: ['CyclicFLamby'] }))['CyclicFLamby']!;
  assert.ok(Math.abs(c.mean - ref.flamby['Cyclic']!.mean) <= 0.02, `CyclicFLamby ${c.mean}`);
});
