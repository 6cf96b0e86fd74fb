/**
 * `setu bench csv` on federations of CSV files:
 * - the four heart hospitals as plain CSV files — examples/heart-csv with its study file, and the raw UCI rows
 *   with a row id plus FLamby's split as one split file per hospital joined on that id: the table equals
 *   `setu bench flamby-heart`'s, run by run, seed by seed (pooled test and every hospital's own test);
 * - a synthetic federation whose sites label their split column differently, under global normalisation;
 * - a Cox study on lung split by institution (C-index on the pooled test set);
 * - the command itself: table, CSV, SVG, JSON, and one-line errors.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { StudySpec } from '../../protocol/api.js';
import { createRng } from '../../learning/rng.js';
import { HEART_CENTERS, defaultHeartDir } from '../../site/data/heart.js';
import { parseDataSchema } from '../../site/data/schema.js';
import { SETU_MAIN } from '../../testing/processes.js';
import { rSkipReason } from '../../testing/oracles.js';
import { lungCsvText } from '../../analytics/testing.js';
import { HEART_PROTOCOL, HEART_STRATEGIES, runHeartBenchmark } from './flamby-heart.js';
import { loadBenchData, readFederation, type FederationSpec } from './csv-federation.js';
import { runCsvBenchmark } from './csv.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'setu-bench-csv-'));
const UCI = 'row,age,sex,cp,trestbps,chol,fbs,restecg,thalach,exang,oldpeak,slope,ca,thal,num';

/** Each hospital's UCI file as a CSV with a header and a row id, and FLamby's split of it as a split file on that id. */
function heartAsCsv(dir: string): FederationSpec['sites'] {
  const split = readFileSync(join(defaultHeartDir(), 'heart_split.csv'), 'utf8').trim().split('\n').slice(1).map((l) => l.split(','));
  return HEART_CENTERS.map((c, k) => {
    const lines = readFileSync(join(defaultHeartDir(), `processed.${c}.data`), 'utf8').split('\n').filter((l) => l !== '');
    writeFileSync(join(dir, `${c}.csv`), [UCI, ...lines.map((l, i) => `${i},${l}`)].join('\n') + '\n');
    writeFileSync(join(dir, `${c}-split.csv`), ['row,set', ...split.filter((s) => Number(s[0]) === k).map((s) => `${s[1]},${s[2]}`)].join('\n') + '\n');
    return { name: c, data: join(dir, `${c}.csv`), splitFile: join(dir, `${c}-split.csv`) };
  });
}

const HEART_SCHEMA = parseDataSchema({
  features: [...['age', 'sex', 'trestbps', 'chol', 'fbs', 'thalach', 'exang', 'oldpeak'].map((name) => ({ name, type: 'numeric' })),
    { name: 'cp', type: 'categorical', levels: ['1', '2', '3', '4'], dropFirst: true }, { name: 'restecg', type: 'categorical', levels: ['0', '1', '2'], dropFirst: true }],
  task: { kind: 'binary', label: 'num', positive: { above: 0 } },
  preprocessing: { normalise: 'site', scope: 'all', missing: 'drop' },
  split: { kind: 'file', id: 'row', column: 'set' },
});

test('the heart hospitals as CSV files with split files reproduce bench flamby-heart run by run', (t) => {
  const dir = tmp();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const study: StudySpec = { name: 'heart', dataset: 'heart', model: { kind: 'logistic', inputDim: 13 }, strategy: { name: 'FedAvg' }, rounds: HEART_PROTOCOL.rounds, fit: { localSteps: HEART_PROTOCOL.localSteps, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.001 } }, dataSchema: HEART_SCHEMA };
  const f: FederationSpec = {
    study, schema: HEART_SCHEMA, sites: heartAsCsv(dir),
    // FLamby's pooled training order (its directory listing), as bench flamby-heart uses.
    pooledOrder: ['cleveland', 'switzerland', 'hungarian', 'va'],
    central: { epochs: HEART_PROTOCOL.pooledEpochs, batchSize: HEART_PROTOCOL.batchSize, optimizer: { kind: 'adam', lr: HEART_PROTOCOL.pooledLr } },
    methods: Object.fromEntries(Object.entries(HEART_STRATEGIES).map(([m, s]) => [m, { strategy: s.strategy, params: s.params }])),
  };
  const seeds = [42, 43];
  const heartNames = ['Pooled', 'Local0', 'Local1', 'Local2', 'Local3', ...Object.keys(HEART_STRATEGIES)];
  const csvNames = ['Pooled', ...HEART_CENTERS.map((c) => `Local-${c}`), ...Object.keys(HEART_STRATEGIES)];
  const { runs, data } = runCsvBenchmark(f, { seeds, methods: csvNames });
  assert.equal(data.pooledTest.n, 254);
  assert.deepEqual(data.sites.map((s) => [s.train.n, s.test.n]), [[199, 104], [172, 89], [30, 16], [85, 45]]);
  const want = runHeartBenchmark({ seeds, methods: heartNames });
  assert.equal(runs.length, want.length);
  runs.forEach((r, i) => {
    const h = want[i]!;
    assert.equal(r.error, undefined);
    assert.equal(r.metric['Pooled Test'], h.accuracy['Pooled Test'], `seed ${r.seed} ${r.method} vs ${h.method}: pooled test`);
    HEART_CENTERS.forEach((c, k) => assert.equal(r.metric[c], h.accuracy[`client_test_${k}`], `seed ${r.seed} ${r.method}: ${c} test`));
  });
});

test('examples/heart-csv (the heart hospitals as plain CSV files) with examples/analytics/heart-bench.yaml reproduces bench flamby-heart', () => {
  const root = join(defaultHeartDir(), '..', '..');
  const f = readFederation(join(root, 'examples', 'analytics', 'heart-bench.yaml'));
  // The federation file's methods are bench flamby-heart's, verbatim.
  assert.deepEqual(f.methods, Object.fromEntries(Object.entries(HEART_STRATEGIES).map(([m, s]) => [m, { strategy: s.strategy, params: s.params }])));
  const seeds = [42, 44];
  const csvNames = ['Pooled', ...HEART_CENTERS.map((c) => `Local-${c}`), ...Object.keys(HEART_STRATEGIES)];
  const { runs } = runCsvBenchmark(f, { seeds, methods: csvNames });
  const want = runHeartBenchmark({ seeds, methods: ['Pooled', 'Local0', 'Local1', 'Local2', 'Local3', ...Object.keys(HEART_STRATEGIES)] });
  runs.forEach((r, i) => {
    assert.equal(r.metric['Pooled Test'], want[i]!.accuracy['Pooled Test'], `seed ${r.seed} ${r.method}`);
    HEART_CENTERS.forEach((c, k) => assert.equal(r.metric[c], want[i]!.accuracy[`client_test_${k}`], `seed ${r.seed} ${r.method}: ${c}`));
  });
});

/** Three sites; the middle one writes its split column as TR/TE. */
function synthetic(dir: string): void {
  const rng = createRng(5);
  [[220, 0], [150, 0.4], [90, -0.3]].forEach(([n, shift], k) => {
    const labels = k === 1 ? ['TR', 'TE'] : ['train', 'test'];
    const rows = Array.from({ length: n! }, (_, i) => {
      const x = [0, 1, 2].map(() => shift! + rng.normal());
      const y = rng.next() < 1 / (1 + Math.exp(-(x[0]! - 0.8 * x[1]! + 0.5 * x[2]!))) ? 1 : 0;
      return `p${k}_${i},${x.map((v) => v.toFixed(4)).join(',')},${'abc'[i % 3]},${y},${rng.next() < 0.7 ? labels[0] : labels[1]}`;
    });
    writeFileSync(join(dir, `site${k}.csv`), ['pid,x1,x2,x3,grp,y,part', ...rows].join('\n') + '\n');
  });
  writeFileSync(join(dir, 'study.yaml'), `name: synthetic logistic
dataset: synth
model: { kind: logistic, inputDim: 5 }
strategy: { name: FedAvg }
rounds: 8
fit: { localSteps: 20, batchSize: 8, optimizer: { kind: sgd, lr: 0.05 } }
dataSchema:
  features:
    - { name: x1, type: numeric }
    - { name: x2, type: numeric }
    - { name: x3, type: numeric }
    - { name: grp, type: categorical, levels: [a, b, c], dropFirst: true }
  task: { kind: binary, label: y }
  preprocessing: { normalise: global }
  split: { kind: column, column: part, labels: { s1: { train: TR, test: TE } } }
`);
  writeFileSync(join(dir, 'bench.yaml'), 'study: study.yaml\nsites:\n  - { name: s0, data: site0.csv }\n  - { name: s1, data: site1.csv }\n  - { name: s2, data: site2.csv }\nmethods:\n  FedAvg: { strategy: FedAvg }\n  FedProx: { strategy: FedProx, params: { mu: 0.1 } }\n  Krum: { strategy: Krum }\n');
}

test('setu bench csv on a synthetic federation: per-site split labels, global normalisation, table, CSV, SVG, JSON', (t) => {
  const dir = tmp();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  synthetic(dir);
  const run = spawnSync(process.execPath, [SETU_MAIN, 'bench', 'csv', '--federation', 'bench.yaml', '--seeds', '1-3', '--out', 'out', '--json'], { cwd: dir, encoding: 'utf8', timeout: 120_000 });
  assert.equal(run.status, 0, run.stderr);
  const j = JSON.parse(run.stdout) as { metric: string; sites: string[]; methods: Array<{ method: string; mean: number; n: number; error?: string }> };
  assert.equal(j.metric, 'accuracy');
  assert.deepEqual(j.methods.map((m) => m.method), ['Pooled', 'Local-s0', 'Local-s1', 'Local-s2', 'FedAvg', 'FedProx', 'Krum']);
  for (const m of j.methods.slice(0, 6)) assert.ok(m.n === 3 && m.mean > 0.6 && m.mean <= 1, `${m.method}: ${m.mean}`);
  // Krum cannot run on three sites: the row says why instead of failing the benchmark.
  assert.match(j.methods[6]!.error!, /cannot tolerate 1 Byzantine site/);
  assert.match(run.stderr, /Local-s1 .* pooled-test accuracy/);
  assert.match(readFileSync(join(dir, 'out', 'csv-bench-runs.csv'), 'utf8'), /^method,seed,test,metric,seconds,error\nPooled,1,Pooled Test,/);
  assert.match(readFileSync(join(dir, 'out', 'csv-bench-summary.csv'), 'utf8'), /^method,mean,sd,n,seconds_per_run,site_s0,site_s1,site_s2,error\n/);
  assert.match(readFileSync(join(dir, 'out', 'csv-bench.svg'), 'utf8'), /<svg xmlns/);

  // Global normalisation: the sites' statistics add up to the pooled ones, so every site's training rows are
  // exactly its rows of the pooled training set.
  const text = spawnSync(process.execPath, [SETU_MAIN, 'bench', 'csv', '--study', 'study.yaml', '--site', 's0=site0.csv', '--site', 's1=site1.csv', '--methods', 'pooled,FedAvg', '--seeds', '7', '--out', 'out2'], { cwd: dir, encoding: 'utf8' });
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /Pooled +0\.\d{4} ± 0\.0000 \(1\)/);
  assert.match(text.stdout, /2 sites \(s0 \d+\/\d+, s1 \d+\/\d+ train\/test\)/);
});

test('global normalisation makes each site\'s training rows its rows of the pooled set', (t) => {
  const dir = tmp();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  synthetic(dir);
  const schema = parseDataSchema({ ...(JSON.parse(JSON.stringify({ features: [{ name: 'x1', type: 'numeric' }, { name: 'x2', type: 'numeric' }], task: { kind: 'binary', label: 'y' } }))), preprocessing: { normalise: 'global' }, split: { kind: 'column', column: 'part', labels: { s1: { train: 'TR', test: 'TE' } } } });
  const data = loadBenchData({ schema, sites: [0, 1, 2].map((k) => ({ name: `s${k}`, data: join(dir, `site${k}.csv`) })), pooledOrder: ['s0', 's1', 's2'] });
  const concat = data.sites.flatMap((s) => Array.from(s.train.x));
  assert.deepEqual(concat, Array.from(data.pooledTrain.x));
});

test('setu bench csv: a Cox study on lung split by institution reports the C-index', { skip: rSkipReason() }, (t) => {
  const dir = tmp();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const lung = lungCsvText().trim().split('\n');
  const h = lung[0]!.split(',');
  const inst = h.indexOf('"inst"') >= 0 ? h.indexOf('"inst"') : h.indexOf('inst');
  const byInst = new Map<string, string[]>();
  for (const l of lung.slice(1)) byInst.set(l.split(',')[inst]!, [...(byInst.get(l.split(',')[inst]!) ?? []), l]);
  const big = [...byInst].filter(([, rows]) => rows.length >= 18).map(([k]) => k);
  for (const k of big) writeFileSync(join(dir, `inst${k}.csv`), [lung[0], ...byInst.get(k)!].join('\n') + '\n');
  writeFileSync(join(dir, 'study.yaml'), `name: lung cox
dataset: lung
model: { kind: cox, inputDim: 3, ties: breslow }
strategy: { name: FedAvg }
rounds: 20
fit: { localSteps: 5, batchSize: 64, optimizer: { kind: sgd, lr: 0.1 } }
dataSchema:
  features: [{ name: age, type: numeric }, { name: sex, type: numeric }, { name: ph.ecog, type: numeric }]
  task: { kind: survival, time: time, event: status }
  preprocessing: { normalise: global }
  split: { kind: stratified, trainFraction: 0.7, seed: 3 }
`);
  const run = spawnSync(process.execPath, [SETU_MAIN, 'bench', 'csv', '--study', 'study.yaml', ...big.flatMap((k) => ['--site', `inst${k}=inst${k}.csv`]), '--methods', 'pooled,local,FedAvg', '--seeds', '1,2', '--json', '--out', 'out'], { cwd: dir, encoding: 'utf8', timeout: 120_000 });
  assert.equal(run.status, 0, run.stderr);
  const j = JSON.parse(run.stdout) as { metric: string; methods: Array<{ method: string; mean: number; survival: { unoC: number; meanAuc: number; ibs: number } }> };
  assert.equal(j.metric, 'cIndex');
  const byName = Object.fromEntries(j.methods.map((m) => [m.method, m]));
  assert.ok(byName['Pooled']!.mean > 0.55 && byName['FedAvg']!.mean > 0.55, JSON.stringify(byName));
  // Uno's C, AUC(t) and the integrated Brier score sit beside Harrell's C (a useful model: AUC above ½, IBS below ¼).
  for (const m of ['Pooled', 'FedAvg']) {
    const s = byName[m]!.survival;
    assert.ok(s.unoC > 0.5 && s.meanAuc > 0.5 && s.ibs > 0 && s.ibs < 0.25, `${m}: ${JSON.stringify(s)}`);
  }
  assert.match(readFileSync(join(dir, 'out', 'csv-bench-runs.csv'), 'utf8'), /\nPooled,1,Pooled Test ibs,0\.\d+/);
});

test('setu bench csv: mistakes are one readable line', (t) => {
  const dir = tmp();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  synthetic(dir);
  writeFileSync(join(dir, 'bad.yaml'), 'study: study.yaml\nsites:\n  - { name: s0, data: site0.csv }\n  - { name: s0, data: site1.csv }\n');
  writeFileSync(join(dir, 'nolabels.yaml'), 'study: study.yaml\nsites:\n  - { name: s0, data: site0.csv }\n  - { name: other, data: site1.csv }\n');
  for (const [args, message] of [
    [['--federation', 'bad.yaml'], /^setu: bad.yaml: sites: names repeat\n$/],
    [['--federation', 'nolabels.yaml'], /^setu: site other: column "part": split value "TR" is neither "train" nor "test" on line 2/],
    [['--federation', 'bench.yaml', '--methods', 'FedSGD'], /^setu: --methods: unknown method "FedSGD" \(known: all, pooled, local, fed, Pooled, Local-s0, Local-s1, Local-s2, FedAvg, FedProx, Krum\)\n$/],
    [['--study', 'study.yaml'], /no federation: give --federation FILE, or --study FILE and --site NAME=FILE/],
    [['--federation', 'missing.yaml'], /^setu: cannot read federation file missing.yaml: ENOENT\n$/],
  ] as const) {
    const r = spawnSync(process.execPath, [SETU_MAIN, 'bench', 'csv', ...args], { cwd: dir, encoding: 'utf8' });
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message);
  }
  const help = spawnSync(process.execPath, [SETU_MAIN, 'bench', 'csv', '--help'], { encoding: 'utf8' });
  assert.equal(help.status, 0);
  assert.match(help.stdout, /^Usage: setu bench csv --federation bench.yaml/);
});
