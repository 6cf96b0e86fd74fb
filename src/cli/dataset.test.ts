/**
 * `setu site dataset check|preview|explain` as real processes, on each kind of source: an SS-MIX2 tree
 * (clean and with a broken file), an OMOP database, a FHIR export and a CSV file; --help on every
 * command; operator mistakes are one line.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'libsql';
import YAML from 'yaml';
import { SETU_MAIN } from '../testing/processes.js';
import { parseCsv } from '../site/data/csv.js';
import { writeFiles } from '../tools/heart-convert.js';
import { heartSsmix2, ssmix2PatientId } from '../tools/heart-ssmix2.js';
import { heartNdjson } from '../tools/heart-fhir.js';
import { heartOmopEnrolment, heartOmopSql } from '../tools/heart-omop.js';
import { encodeIso2022jp, decodeText } from '../datasources/ssmix2/charset.js';

const EXAMPLE = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'examples', 'heart-csv');
const dir = mkdtempSync(join(tmpdir(), 'setu-dataset-cli-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

function setup(): string {
  const files = heartSsmix2(2);
  writeFiles(join(dir, 'clean'), files);
  // The same hospital with one broken lab file: an undefined escape in the cholesterol segment.
  const lab = Object.keys(files).find((p) => p.includes(`/${ssmix2PatientId(2, 0)}/`) && p.includes('/OML-11/'))!;
  files[lab] = encodeIso2022jp(decodeText(files[lab] as Uint8Array, 'iso-2022-jp').replace(/(OBX\|1\|NM\|[^|]*\|\|)[^|]*/, '$1\\Q\\'));
  writeFiles(join(dir, 'messy'), files);
  writeFiles(join(dir, 'fhir'), heartNdjson(2, 'jpcore'));
  const db = new Database(join(dir, 'omop.db'));
  db.exec(heartOmopSql(2));
  db.close();
  writeFileSync(join(dir, 'omop-enrolment.csv'), heartOmopEnrolment(2));
  const ss2 = (d: string) => ({ format: 'ss-mix2', storage: { root: `${d}/ssmix2` }, mapping: 'setu:heart-ssmix2', enrolment: { file: `${d}/enrolment.csv`, patient: 'patient_id' } });
  const cfg = join(dir, 'site.yaml');
  writeFileSync(cfg, YAML.stringify({
    coordinator: 'https://coordinator.example.org',
    datasets: {
      heart: ss2('clean'),
      messy: ss2('messy'),
      gone: { ...ss2('clean'), storage: { root: 'no-such-folder' } },
      omop: { format: 'omop', database: { sqlite: 'omop.db' }, mapping: 'setu:heart-omop', licences: ['snomed-ct'], enrolment: { file: 'omop-enrolment.csv', patient: 'person_id' } },
      fhir: { format: 'fhir', source: { kind: 'ndjson', dir: 'fhir' }, mapping: 'setu:heart-fhir-jpcore' },
      csv: { format: 'csv', path: join(EXAMPLE, 'switzerland.csv') },
    },
  }));
  return cfg;
}
const cfg = setup();
const STUDY = join(EXAMPLE, 'study.yaml');

function setu(...args: string[]): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [SETU_MAIN, 'site', 'dataset', ...args], { encoding: 'utf8' });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

test('check: extraction and the study\'s schema check, counts by reason; --json says the same', () => {
  const t = setu('check', '--config', cfg, '--dataset', 'heart', '--study', STUDY);
  assert.equal(t.status, 0, t.stderr);
  assert.match(t.stdout, /dataset heart \(ss-mix2, mapping heart-ssmix2 v1, 492 source records\): 123 rows × 12 columns/);
  assert.match(t.stdout, /schema check passes: 46 of 123 rows complete/);
  assert.match(t.stdout, /missing-value\s+fbs\s+74/);
  const j = JSON.parse(setu('check', '--config', cfg, '--dataset', 'heart', '--study', STUDY, '--json').stdout) as { rows: number; skipped: unknown[]; schema: { problems: unknown[]; kept: number; dropped: Array<{ column: string; count: number }> } };
  assert.equal(j.rows, 123);
  assert.deepEqual(j.skipped, []);
  assert.equal(j.schema.kept, 46);
  // The CSV file of the same hospital drops the same rows for the same columns.
  const csv = JSON.parse(setu('check', '--config', cfg, '--dataset', 'csv', '--study', STUDY, '--json').stdout) as typeof j;
  assert.equal(csv.schema.kept, 46);
  assert.deepEqual(csv.schema.dropped, j.schema.dropped);
});

test('check on a messy source lists each issue with file, line and field, and counts it', () => {
  const t = setu('check', '--config', cfg, '--dataset', 'messy');
  assert.equal(t.status, 0, t.stderr);
  assert.match(t.stdout, /broken-segment\s+1/);
  assert.match(t.stdout, /OML-11\/3000000000_19870101_OML-11_\d{15}_\d{17}_01_1:7: OBX-5: broken-segment: \\Q\\ is not an HL7 escape sequence/);
  // A schema the table does not meet: exit 1 with the column named.
  const study = join(dir, 'other-study.yaml');
  const spec = YAML.parse(readFileSync(STUDY, 'utf8')) as { dataSchema: { features: Array<{ name: string }> } };
  spec.dataSchema.features.push({ name: 'ldl', type: 'numeric' } as never);
  writeFileSync(study, YAML.stringify(spec));
  const bad = setu('check', '--config', cfg, '--dataset', 'heart', '--study', study);
  assert.equal(bad.status, 1);
  assert.match(bad.stdout, /schema check fails:\n\s+ldl: /);
});

test('preview: the first rows as a table, JSON or CSV, the same rows each way', () => {
  const j = JSON.parse(setu('preview', '--config', cfg, '--dataset', 'omop', '--rows', '5', '--json').stdout) as Array<Record<string, string | null>>;
  assert.equal(j.length, 5);
  assert.deepEqual(Object.keys(j[0]!), ['age', 'sex', 'cp', 'trestbps', 'chol', 'fbs', 'restecg', 'thalach', 'exang', 'oldpeak', 'num', 'set']);
  const c = parseCsv(setu('preview', '--config', cfg, '--dataset', 'omop', '--rows', '5', '--csv').stdout);
  assert.deepEqual(c.rows.map((r) => Object.fromEntries(c.header.map((h, k) => [h, r[k]]))), j);
  const t = setu('preview', '--config', cfg, '--dataset', 'heart', '--rows', '2');
  assert.equal(t.status, 0, t.stderr);
  assert.match(t.stdout, /^age\s+sex\s+cp/);
  assert.match(t.stdout, /2 of 123 rows/);
});

test('explain: the SQL, the ViewDefinitions and FHIRPath, the HL7 segment and field paths', () => {
  const omop = setu('explain', '--config', cfg, '--dataset', 'omop');
  assert.equal(omop.status, 0, omop.stderr);
  assert.match(omop.stdout, /-- measurement \(measurement\)\n[\s\S]*?SELECT [\s\S]*?FROM measurement x/);
  const fhir = setu('explain', '--config', cfg, '--dataset', 'fhir').stdout;
  assert.match(fhir, /Patient: http:\/\/jpfhir\.jp\/fhir\/core\/StructureDefinition\/JP_Patient/);
  assert.match(fhir, /path: subject\.getReferenceKey\(Patient\)/);
  const ss2 = setu('explain', '--config', cfg, '--dataset', 'heart').stdout;
  assert.match(ss2, /one per OBX segment in OML-11 \(OUL\^R22\), OMG-13 \(ORU\^R01\)\n\s+where OBX-11 is one of F, C\n\s+system = OBX-3\.3; code = OBX-3\.1; value = OBX-5\.1/);
  assert.match(ss2, /chol: result facts with urn:oid:1\.2\.392\.200119\.4\.504\|3F050000002327101; in mg\/dL/);
  assert.match(setu('explain', '--config', cfg, '--dataset', 'csv').stdout, /switzerland\.csv is read as it is/);
});

test('every command answers --help; mistakes are one line', () => {
  for (const sub of [[], ['check'], ['preview'], ['explain']]) {
    const h = setu(...sub, '--help');
    assert.equal(h.status, 0, sub.join(' '));
    assert.match(h.stdout, /^Usage: setu site dataset /);
    if (sub.length) assert.match(h.stdout, /--config FILE\s+the site config/);
  }
  const oneLine = (r: { status: number; stderr: string }, status: number, re: RegExp) => {
    assert.equal(r.status, status, r.stderr);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  };
  oneLine(setu('check', '--config', cfg), 2, /needs --config site\.yaml and --dataset KEY/);
  oneLine(setu('check', '--config', cfg, '--dataset', 'nope'), 2, /no dataset "nope" \(it has: heart, messy, gone, omop, fhir, csv\)/);
  oneLine(setu('check', '--config', join(dir, 'missing.yaml'), '--dataset', 'heart'), 2, /cannot read site config .*missing\.yaml: ENOENT/);
  oneLine(setu('check', '--config', cfg, '--dataset', 'gone'), 1, /dataset gone: cannot read the SS-MIX2 storage root .*no-such-folder: ENOENT/);
  oneLine(setu('preview', '--config', cfg, '--dataset', 'heart', '--colour'), 2, /unknown option "--colour"/);
  oneLine(setu('frobnicate'), 2, /unknown: setu site dataset frobnicate \(check, preview, explain\)/);
});
