/** A site's split from a column whose labels differ per site, or from its own split file joined on an id column. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseCsv } from './csv.js';
import { checkSchema, parseDataSchema } from './schema.js';
import { loadTabular } from './tabular.js';

const rows = (labels: string[]) => 'pid,age,y,part\n' + labels.map((l, i) => `p${i},${30 + i},${i % 2},${l}`).join('\n') + '\n';
const base = { features: [{ name: 'age', type: 'numeric' }], task: { kind: 'binary', label: 'y' } };

test('per-site split labels: each site reads its own words for train and test', () => {
  const schema = parseDataSchema({ ...base, split: { kind: 'column', column: 'part', labels: { osaka: { train: 'TR', test: 'TE' } } } });
  const delhi = loadTabular(parseCsv(rows(['train', 'train', 'test', 'train']), 'delhi.csv'), schema, { site: 'delhi' });
  assert.deepEqual([delhi.train.n, delhi.test.n], [3, 1]);
  const osaka = loadTabular(parseCsv(rows(['TR', 'TE', 'TE', 'TR', 'TR']), 'osaka.csv'), schema, { site: 'osaka' });
  assert.deepEqual([osaka.train.n, osaka.test.n], [3, 2]);
  assert.deepEqual(Array.from(osaka.test.x), [31, 32]);
  // Read under another site's name, the labels are wrong and the check says so.
  assert.match(checkSchema(parseCsv(rows(['TR', 'TE']), 'osaka.csv'), schema, 'delhi')[0]!.message, /split value "TR" is neither "train" nor "test"/);
  assert.throws(() => parseDataSchema({ ...base, split: { kind: 'column', column: 'part', labels: { osaka: { train: 'TR' } } } }), /\/split/);
});

test('a split file joined on an id column', () => {
  const schema = parseDataSchema({ ...base, split: { kind: 'file', id: 'pid', column: 'set' } });
  const data = parseCsv(rows(['x', 'x', 'x', 'x']), 'site.csv');
  const split = parseCsv('set,pid\ntest,p2\ntrain,p0\ntrain,p3\ntest,p1\n', 'site-split.csv');
  const t = loadTabular(data, schema, { splitFile: split });
  assert.deepEqual(Array.from(t.train.x), [30, 33]);
  assert.deepEqual(Array.from(t.test.x), [31, 32]);
  assert.throws(() => loadTabular(data, schema), /the study's split comes from a split file joined on "pid", and this site names no split file/);
  assert.throws(() => loadTabular(data, schema, { splitFile: parseCsv('set,pid\ntrain,p0\ntest,p1\ntrain,p2\n', 's.csv') }), /site.csv, line 5: id "p3" is not in the split file s.csv/);
  assert.throws(() => loadTabular(data, schema, { splitFile: parseCsv('set,pid\ntrain,p0\ntest,p0\n', 's.csv') }), /s.csv, line 3: id "p0" appears twice/);
  assert.throws(() => loadTabular(data, schema, { splitFile: parseCsv('set,pid\nvalid,p0\n', 's.csv') }), /s.csv, line 2, column set: "valid" is neither "train" nor "test"/);
  assert.throws(() => loadTabular(data, schema, { splitFile: parseCsv('fold,id\n1,p0\n', 's.csv') }), /split file s.csv needs columns "pid" and "set" \(it has: fold, id\)/);
  assert.throws(() => parseDataSchema({ features: [{ name: 'pid', type: 'numeric' }], task: { kind: 'binary', label: 'y' }, split: { kind: 'file', id: 'pid' } }), /"pid" is both a feature and a target\/split column/);
});
