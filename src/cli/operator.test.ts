import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readStudyFile } from './operator.js';

const dir = mkdtempSync(join(tmpdir(), 'setu-study-'));
const file = (name: string, text: string) => {
  const f = join(dir, name);
  writeFileSync(f, text);
  return f;
};

const good = `name: heart
dataset: heart
model: { kind: logistic, inputDim: 13 }
strategy: { name: FedAvg }
rounds: 15
fit: { localSteps: 100, batchSize: 4, optimizer: { kind: sgd, lr: 0.001 } }
`;

test('a valid study file (YAML or JSON) is read', () => {
  assert.equal((readStudyFile(file('ok.yaml', good)) as { rounds: number }).rounds, 15);
  assert.equal((readStudyFile(file('ok.json', JSON.stringify({ name: 'h', dataset: 'heart', model: { kind: 'logistic', inputDim: 13 }, strategy: { name: 'FedAvg' }, rounds: 1, fit: { epochs: 1, batchSize: 4, optimizer: { kind: 'adam', lr: 0.01 } } }))) as { rounds: number }).rounds, 1);
});

test('a malformed study file names the file and the field', () => {
  const f1 = file('bad1.yaml', good.replace('lr: 0.001', 'lr: -1'));
  assert.throws(() => readStudyFile(f1), new RegExp(`${f1.replace(/[.]/g, '\\.')}: /fit/optimizer/lr`));
  const f2 = file('bad2.yaml', good.replace('rounds: 15', 'rounds: many'));
  assert.throws(() => readStudyFile(f2), /\/rounds/);
  const f3 = file('bad3.yaml', good + 'colour: blue\n');
  assert.throws(() => readStudyFile(f3), /bad3\.yaml/);
  const f4 = file('bad4.yaml', good.replace('inputDim: 13', 'inputDim: 0'));
  assert.throws(() => readStudyFile(f4), /\/model/);
  assert.throws(() => readStudyFile(join(dir, 'missing.yaml')), /cannot read study file .*missing\.yaml: ENOENT/);
});
