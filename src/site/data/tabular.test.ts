import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { defaultHeartDir, loadHeartCenter } from './heart.js';
import { parseCsv } from './csv.js';
import { combineSums, localSums, statsFromSums } from './global-stats.js';
import { parseDataSchema } from './schema.js';
import { loadTabular, normaliseTabular, SchemaMismatchError, stratifiedSplit } from './tabular.js';

const survivalSchema = parseDataSchema({
  features: [
    { name: 'age', type: 'numeric' },
    { name: 'stage', type: 'categorical', levels: ['I', 'II', 'III'] },
  ],
  task: { kind: 'survival', time: 'T', event: 'E' },
  preprocessing: { normalise: 'site' },
  split: { kind: 'column', column: 'set' },
});

test('survival CSV → encoded train/test Datasets, missing rows dropped and reported', () => {
  const csv = 'age,stage,T,E,set,unused\n50,I,3,1,train,?\n60,III,5,0,train,\n70,?,2,1,test,x\n40,II,8,1,test,\n80,I,1,0,train,\n';
  const d = loadTabular(parseCsv(csv, 's.csv'), survivalSchema);
  assert.deepEqual(d.featureNames, ['age', 'stage_I', 'stage_II', 'stage_III']);
  assert.deepEqual(d.droppedLines, [4]); // line 4 lacks the stage; the unused column does not matter
  assert.equal(d.train.n, 3);
  assert.deepEqual(Array.from(d.train.x), [50, 1, 0, 0, 60, 0, 0, 1, 80, 1, 0, 0]);
  assert.deepEqual(Array.from(d.train.time!), [3, 5, 1]);
  assert.deepEqual(Array.from(d.train.event!), [1, 0, 0]);
  assert.deepEqual(Array.from(d.test.x), [40, 0, 1, 0]);
  assert.deepEqual(d.normaliseMask, [true, false, false, false]);
  // Site normalisation touches only the numeric column and uses training rows only.
  const { train, test: te, stats } = normaliseTabular(d, survivalSchema);
  assert.deepEqual(stats!.mean.map((v) => +v.toFixed(9)), [190 / 3, 2 / 3, 0, 1 / 3].map((v) => +v.toFixed(9)));
  assert.ok(Math.abs(train.x[0]! - (50 - 190 / 3) / stats!.std[0]!) < 1e-5);
  assert.equal(train.x[1], 1);
  assert.ok(Math.abs(te.x[0]! - (40 - 190 / 3) / stats!.std[0]!) < 1e-5);
});

test('a file that does not match is refused with every problem by column', () => {
  const csv = 'age,stage,T,E\n50,IV,3,yes\n';
  assert.throws(() => loadTabular(parseCsv(csv, 's.csv'), survivalSchema), (e: unknown) => {
    assert.ok(e instanceof SchemaMismatchError);
    assert.deepEqual(e.problems.map((p) => p.column), ['stage', 'E', 'set']);
    return true;
  });
  const strict = { ...survivalSchema, preprocessing: { normalise: 'none' as const, missing: 'error' as const } };
  assert.throws(() => loadTabular(parseCsv('age,stage,T,E,set\n50,,3,1,train\n', 's.csv'), strict), /s\.csv, line 2, column stage: missing value/);
});

test('global normalisation uses the federated statistics and refuses to run without them', () => {
  const schema = { ...survivalSchema, preprocessing: { normalise: 'global' as const } };
  const a = loadTabular(parseCsv('age,stage,T,E,set\n50,I,3,1,train\n60,II,5,0,train\n55,I,4,0,train\n', 'a.csv'), schema);
  const b = loadTabular(parseCsv('age,stage,T,E,set\n70,I,3,1,train\n90,II,5,0,train\n80,I,2,1,train\n10,I,1,1,test\n', 'b.csv'), schema);
  assert.throws(() => normaliseTabular(a, schema), /federated statistics/);
  const st = statsFromSums(combineSums([localSums(a.train), localSums(b.train)]));
  assert.equal(st.mean[0], 405 / 6);
  const out = normaliseTabular(b, schema, st);
  assert.ok(Math.abs(out.test.x[0]! - (10 - 405 / 6) / st.std[0]!) < 1e-5);
});

test('seeded stratified split keeps each class\'s share and is reproducible', () => {
  const y = Array.from({ length: 100 }, (_, i) => (i % 4 === 0 ? 1 : 0));
  const f = stratifiedSplit(y, 0.66, 43);
  assert.deepEqual(stratifiedSplit(y, 0.66, 43), f);
  assert.notDeepEqual(stratifiedSplit(y, 0.66, 44), f);
  assert.equal(f.filter((t, i) => t && y[i] === 1).length, Math.round(0.66 * 25));
  assert.equal(f.filter((t, i) => t && y[i] === 0).length, Math.round(0.66 * 75));
});

test('Fed-Heart-Disease declared as a schema gives the same tensors as the dedicated loader', () => {
  const dir = defaultHeartDir();
  const split = new Map<string, string>();
  for (const line of readFileSync(join(dir, 'heart_split.csv'), 'utf8').trim().split('\n').slice(1)) {
    const [c, r, s] = line.split(',');
    split.set(`${c}:${r}`, s!);
  }
  const cols = ['age', 'sex', 'cp', 'trestbps', 'chol', 'fbs', 'restecg', 'thalach', 'exang', 'oldpeak', 'slope', 'ca', 'thal', 'num'];
  const schema = parseDataSchema({
    features: [
      ...['age', 'sex', 'trestbps', 'chol', 'fbs', 'thalach', 'exang', 'oldpeak'].map((name) => ({ name, type: 'numeric' })),
      { name: 'cp', type: 'categorical', levels: ['1.0', '2.0', '3.0', '4.0'], dropFirst: true },
      { name: 'restecg', type: 'categorical', levels: ['0.0', '1.0', '2.0'], dropFirst: true },
    ],
    task: { kind: 'binary', label: 'num', positive: { above: 0 } },
    preprocessing: { normalise: 'site', scope: 'all' },
    split: { kind: 'column', column: 'set' },
  });
  for (const [center, name] of [[0, 'cleveland'], [1, 'hungarian']] as const) {
    const lines = readFileSync(join(dir, `processed.${name}.data`), 'utf8').trim().split('\n');
    const csv = [[...cols, 'set'].join(','), ...lines.map((l, i) => `${l.trim()},${split.get(`${center}:${i}`) ?? ''}`)].join('\n');
    const ours = normaliseTabular(loadTabular(parseCsv(csv, name), schema), schema);
    const ref = loadHeartCenter(dir, center);
    for (const part of ['train', 'test'] as const) {
      assert.equal(ours[part].n, ref[part].n);
      assert.deepEqual(Array.from(ours[part].y), Array.from(ref[part].y));
      // The reference rounds its statistics to float32 like torch; ours stay float64.
      const worst = ours[part].x.reduce((m, v, i) => Math.max(m, Math.abs(v - ref[part].x[i]!)), 0);
      assert.ok(worst < 1e-5, `${name} ${part}: max difference ${worst}`);
    }
  }
});
