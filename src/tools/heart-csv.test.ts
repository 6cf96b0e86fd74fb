import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { HEART_CENTERS, loadHeartCenter, type HeartCenter } from '../site/data/heart.js';
import { parseCsv } from '../site/data/csv.js';
import { parseDataSchema } from '../site/data/schema.js';
import { loadTabular, normaliseTabular } from '../site/data/tabular.js';
import { StudySpecSchema, checkValue } from '../protocol/api.js';
import YAML from 'yaml';
import { HEART_DATA_SCHEMA, heartCsv } from './heart-csv.js';
import { heartCsvFiles } from './heart-convert.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const EXAMPLE = join(ROOT, 'examples', 'heart-csv');

test('the committed examples/heart-csv is what the converter writes', () => {
  for (const [rel, body] of Object.entries(heartCsvFiles())) assert.equal(readFileSync(join(EXAMPLE, rel), 'utf8'), body, `${rel} is stale: run node dist/tools/heart-convert.js csv --out examples/heart-csv`);
});

test('the study file is a valid study spec whose schema reads every hospital CSV', () => {
  const spec = YAML.parse(readFileSync(join(EXAMPLE, 'study.yaml'), 'utf8')) as { dataSchema: unknown };
  assert.deepEqual(checkValue(StudySpecSchema, spec), []);
  const schema = parseDataSchema(spec.dataSchema);
  for (const name of HEART_CENTERS) loadTabular(parseCsv(readFileSync(join(EXAMPLE, `${name}.csv`), 'utf8'), name), schema);
});

test('CSV + the heart schema reproduce the fed-heart-disease loader bit for bit; float64 arithmetic is 1 ulp off', () => {
  for (let c = 0; c < 4; c++) {
    const want = loadHeartCenter(undefined, c);
    const raw = loadTabular(parseCsv(heartCsv(c as HeartCenter), `${HEART_CENTERS[c]}.csv`), HEART_DATA_SCHEMA);
    const got = normaliseTabular(raw, HEART_DATA_SCHEMA);
    for (const part of ['train', 'test'] as const) {
      assert.equal(got[part].n, want[part].n, `${HEART_CENTERS[c]} ${part} rows`);
      assert.deepEqual(got[part].featureNames, want[part].featureNames);
      assert.deepEqual(Array.from(got[part].x), Array.from(want[part].x), `${HEART_CENTERS[c]} ${part} features`);
      assert.deepEqual(Array.from(got[part].y), Array.from(want[part].y), `${HEART_CENTERS[c]} ${part} labels`);
    }
    // Why the option exists: the default float64 path rounds once at the end, PyTorch rounds every step.
    const f64 = { ...HEART_DATA_SCHEMA, preprocessing: { ...HEART_DATA_SCHEMA.preprocessing!, arithmetic: 'float64' as const } };
    const other = normaliseTabular(raw, f64).train.x;
    let differ = 0;
    other.forEach((v, i) => {
      assert.ok(Math.abs(v - want.train.x[i]!) <= 5e-7, 'float64 arithmetic agrees to within an ulp or two');
      if (v !== want.train.x[i]) differ++;
    });
    assert.ok(differ > 0, `${HEART_CENTERS[c]}: float64 arithmetic differs in the last bit somewhere`);
  }
});

test('heart-convert csv --out writes the files; a bad form is one readable line', () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-heart-csv-'));
  try {
    const tool = join(ROOT, 'dist', 'tools', 'heart-convert.js');
    execFileSync(process.execPath, [tool, 'csv', '--out', dir], { stdio: 'pipe' });
    assert.equal(readFileSync(join(dir, 'va.csv'), 'utf8'), heartCsv(3));
    assert.throws(() => execFileSync(process.execPath, [tool, 'xml', '--out', dir], { stdio: 'pipe' }), (e: { status: number; stderr: Buffer }) => e.status === 2 && /form must be one of csv.*got "xml"/.test(e.stderr.toString()) && !/\n\s+at /.test(e.stderr.toString()));
    assert.match(execFileSync(process.execPath, [tool, '--help']).toString(), /--out DIR/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
