import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseCsv } from './csv.js';
import { checkSchema, encodedFeatureNames, parseDataSchema } from './schema.js';

const schema = parseDataSchema({
  features: [
    { name: 'age', type: 'numeric' },
    { name: 'cp', type: 'categorical', levels: ['1', '2', '3', '4'], dropFirst: true },
  ],
  task: { kind: 'binary', label: 'num', positive: { above: 0 } },
  preprocessing: { normalise: 'site' },
  split: { kind: 'stratified', trainFraction: 0.66, seed: 43 },
});

test('a matching file has no problems; encoded names follow the declared levels', () => {
  assert.deepEqual(checkSchema(parseCsv('age,cp,num\n63,1,0\n67,4,2\n', 'a.csv'), schema), []);
  assert.deepEqual(encodedFeatureNames(schema), ['age', 'cp_2', 'cp_3', 'cp_4']);
});

test('every problem names its column: missing, non-numeric, unknown level, label not binary', () => {
  const p = checkSchema(parseCsv('age,num\n63,0\nold,1\nyoung,1\n', 'a.csv'), schema);
  assert.deepEqual(p, [
    { column: 'age', message: 'column "age": non-numeric value "old" on line 3 (and 1 more rows)' },
    { column: 'cp', message: 'column "cp" is missing from a.csv' },
  ]);
  const p2 = checkSchema(parseCsv('age,cp,num\n63,5,x\n', 'a.csv'), schema);
  assert.deepEqual(p2.map((q) => q.column), ['cp', 'num']);
  assert.match(p2[0]!.message, /unknown level "5" \(declared: "1", "2", "3", "4"\) on line 2/);
  const noRule = { ...schema, task: { kind: 'binary' as const, label: 'num' } };
  assert.match(checkSchema(parseCsv('age,cp,num\n63,1,2\n', 'a.csv'), noRule)[0]!.message, /label not binary: value "2"/);
});

test('survival and split-column checks', () => {
  const s = parseDataSchema({
    features: [{ name: 'x', type: 'numeric' }],
    task: { kind: 'survival', time: 'T', event: 'E' },
    split: { kind: 'column', column: 'set' },
  });
  assert.deepEqual(checkSchema(parseCsv('x,T,E,set\n1,3.5,1,train\n2,1,0,test\n', 'b.csv'), s), []);
  const p = checkSchema(parseCsv('x,T,E,set\n1,-1,2,dev\n', 'b.csv'), s);
  assert.deepEqual(p.map((q) => q.column), ['T', 'E', 'set']);
  assert.match(p[0]!.message, /negative time -1/);
  assert.match(p[1]!.message, /event must be 0 or 1/);
  assert.match(p[2]!.message, /split value "dev"/);
});

test('parseDataSchema names the bad field', () => {
  assert.throws(() => parseDataSchema({ features: [], task: { kind: 'binary', label: 'y' }, split: { kind: 'column', column: 's' } }), /\/features/);
  assert.throws(() => parseDataSchema({ features: [{ name: 'a', type: 'text' }], task: { kind: 'binary', label: 'y' }, split: { kind: 'column', column: 's' } }), /\/features\/0/);
  assert.throws(() => parseDataSchema({ features: [{ name: 'a', type: 'numeric' }, { name: 'a', type: 'numeric' }], task: { kind: 'binary', label: 'y' }, split: { kind: 'column', column: 's' } }), /listed twice/);
  assert.throws(() => parseDataSchema({ features: [{ name: 'y', type: 'numeric' }], task: { kind: 'binary', label: 'y' }, split: { kind: 'column', column: 's' } }), /both a feature and a target/);
  assert.throws(() => parseDataSchema({ features: [{ name: 'a', type: 'numeric' }], task: { kind: 'binary', label: 'y' }, split: { kind: 'stratified', trainFraction: 1.5, seed: 1 } }), /\/split/);
});
