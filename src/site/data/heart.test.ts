import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  CP_LEVELS, HEART_CENTERS, RESTECG_LEVELS, defaultHeartDir, loadHeartCenter, loadHeartPooled, parseHeartFile, readHeartRaw, readHeartSplit, splitFlags,
} from './heart.js';

const dir = defaultHeartDir();

test('740 complete rows: 303 / 261 / 46 / 130', () => {
  const n = HEART_CENTERS.map((_, c) => readHeartRaw(dir, c as 0).rowInFile.length);
  assert.deepEqual(n, [303, 261, 46, 130]);
});

test('the hard-coded one-hot levels are the union over all four centres', () => {
  const cp = new Set<number>(), ecg = new Set<number>();
  for (let c = 0; c < 4; c++) {
    const r = readHeartRaw(dir, c as 0);
    r.cp.forEach((v) => cp.add(v));
    r.restecg.forEach((v) => ecg.add(v));
  }
  assert.deepEqual([...cp].sort(), [...CP_LEVELS]);
  assert.deepEqual([...ecg].sort(), [...RESTECG_LEVELS]);
});

test('train/test counts 199/104, 172/89, 30/16, 85/45 and membership identical to the split file', () => {
  const split = readHeartSplit(join(dir, 'heart_split.csv'));
  const text = readFileSync(join(dir, 'heart_split.csv'), 'utf8').trim().split(/\r?\n/).map((l) => l.trim()).slice(1);
  for (let c = 0; c < 4; c++) {
    const d = loadHeartCenter(dir, c);
    const fileRows = text.filter((l) => l.startsWith(`${c},`));
    assert.equal(d.train.n, fileRows.filter((l) => l.endsWith('train')).length);
    assert.equal(d.test.n, fileRows.filter((l) => l.endsWith('test')).length);
    // Row by row: the k-th training row of the dataset is the k-th 'train' line's file row.
    const raw = readHeartRaw(dir, c as 0);
    const flags = splitFlags(raw, split);
    const trainRows = raw.rowInFile.filter((_, i) => !flags[i]);
    assert.deepEqual(trainRows, fileRows.filter((l) => l.endsWith('train')).map((l) => Number(l.split(',')[1])));
  }
  assert.deepEqual([0, 1, 2, 3].map((c) => { const d = loadHeartCenter(dir, c); return [d.train.n, d.test.n]; }), [[199, 104], [172, 89], [30, 16], [85, 45]]);
});

test('each centre is normalised with its own training mean and unbiased std', () => {
  for (let c = 0; c < 4; c++) {
    const { train } = loadHeartCenter(dir, c);
    for (let j = 0; j < 13; j++) {
      let s = 0, ss = 0;
      for (let i = 0; i < train.n; i++) s += train.x[i * 13 + j]!;
      const m = s / train.n;
      for (let i = 0; i < train.n; i++) ss += (train.x[i * 13 + j]! - m) ** 2;
      const sd = Math.sqrt(ss / (train.n - 1));
      assert.ok(Math.abs(m) < 1e-5, `centre ${c} col ${j} mean ${m}`);
      // Switzerland's chol (col 3) is constant 0: it stays 0 instead of becoming NaN.
      if (c === 2 && j === 3) assert.equal(sd, 0);
      else assert.ok(Math.abs(sd - 1) < 1e-5, `centre ${c} col ${j} sd ${sd}`);
    }
  }
});

test('first cleveland row is encoded in FLamby feature order', () => {
  // 63,1,1,145,233,1,2,150,0,2.3,... num 0 → cp 1 and restecg 2.
  const r = readHeartRaw(dir, 0);
  assert.deepEqual([...r.features.subarray(0, 13)], [63, 1, 145, 233, 1, 150, 0, Math.fround(2.3), 0, 0, 0, 0, 1]);
  assert.equal(r.labels[0], 0);
});

test('pooled sets: 486 train rows in order 0,2,1,3 and 254 test rows, pooled normalisation', () => {
  const p = loadHeartPooled(dir);
  assert.equal(p.train.n, 486);
  assert.equal(p.test.n, 254);
  assert.deepEqual(p.centerTests.map((d) => d.n), [104, 89, 16, 45]);
  // Un-normalise the 200th pooled training row: the first switzerland training row follows cleveland's 199.
  const sw = readHeartRaw(dir, 2), flags = splitFlags(sw, readHeartSplit(join(dir, 'heart_split.csv')));
  const first = flags.indexOf(false);
  for (let j = 0; j < 13; j++) {
    const back = p.train.x[199 * 13 + j]! * (p.stats.std[j]! + 1e-9) + p.stats.mean[j]!;
    assert.ok(Math.abs(back - sw.features[first * 13 + j]!) < 1e-3);
  }
  // The pooled test set is the concatenation of the centres' pooled-normalised tests.
  assert.deepEqual(p.test.x.subarray(0, 104 * 13), p.centerTests[0]!.x);
});

test('bad input gets a clear error', () => {
  assert.throws(() => loadHeartCenter(dir, 4), /centre must be 0..3/);
  assert.throws(() => parseHeartFile('1,2,3\n', 0), /line 1 has 3 columns/);
  assert.throws(() => parseHeartFile('63,1,5,145,233,1,2,150,0,2.3,3,0,6,0\n', 0), /cp=5/);
  assert.throws(() => parseHeartFile('63,1,x,145,233,1,2,150,0,2.3,3,0,6,0\n', 0), /not a number/);
  assert.throws(() => loadHeartCenter('/nonexistent', 0), /cannot read/);
});
