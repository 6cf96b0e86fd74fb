/**
 * SS-MIX2 standard storage end to end at the site: the heart hospitals converted to storage trees give
 * the heart loader's numbers bit for bit; messy storage (a broken segment, an unknown message type, an
 * unmapped code, an unconvertible unit, a missing value, duplicates on different dates, files that do
 * not follow the layout) is reported with file, line and field, counted by reason, and never throws;
 * prescriptions (RDE^O11) become facts a mapping can use.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import YAML from 'yaml';
import type { HeartCenter } from '../../site/data/heart.js';
import { assertHeartIdentical as assertHeart } from '../../tools/heart-check.js';
import { parseSiteConfig, ConfigError } from '../../site/config.js';
import { heartRecords } from '../../tools/heart-csv.js';
import { writeFiles } from '../../tools/heart-convert.js';
import { heartSsmix2, ssmix2PatientId } from '../../tools/heart-ssmix2.js';
import { extract } from '../extract.js';
import { Ssmix2DatasetSchema, type Ssmix2Dataset } from '../config.js';
import { checkValue } from '../../protocol/api.js';
import { loadMapping, mappingPath, MappingError, parseMapping } from '../mapping.js';
import { decodeText, encodeIso2022jp } from './charset.js';
import { ssmix2Block, ssmix2Explain } from './facts.js';
import { storagePath } from './storage.js';

const dataset = (mapping = 'setu:heart-ssmix2'): Ssmix2Dataset => ({ format: 'ss-mix2', storage: { root: 'ssmix2' }, mapping, enrolment: { file: 'enrolment.csv', patient: 'patient_id' } });

test('SS-MIX2 storage of every heart hospital gives the heart loader\'s numbers bit for bit', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-ssmix2-'));
  try {
    for (let c = 0; c < 4; c++) {
      const d = join(dir, String(c));
      writeFiles(d, heartSsmix2(c as HeartCenter));
      const ex = await extract(dataset(), { configDir: d });
      assert.deepEqual(ex.issues.list, [], 'the converted storage is clean');
      assertHeart(ex, c as HeartCenter);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

type Files = Record<string, Uint8Array | string>;
const text = (b: Uint8Array | string) => decodeText(b as Uint8Array, 'iso-2022-jp');

/** The converted files of the first `n` cleveland patients, by patient and data type. */
function patients(n: number): { files: Files; at: (line: number, type: string) => string } {
  const all = heartSsmix2(0);
  const ids = Array.from({ length: n }, (_, i) => ssmix2PatientId(0, i));
  const files: Files = {};
  for (const [p, b] of Object.entries(all)) if (ids.some((id) => p.includes(`/${id}/`))) files[p] = b;
  files['enrolment.csv'] = ['patient_id,set', ...(all['enrolment.csv'] as string).split('\n').filter((l) => ids.some((id) => l.startsWith(id)))].join('\n') + '\n';
  const at = (line: number, type: string) => Object.keys(files).find((p) => p.includes(`/${ssmix2PatientId(0, line)}/`) && p.includes(`/${type}/`))!;
  return { files, at };
}

function edit(files: Files, path: string, f: (t: string) => string): void {
  files[path] = encodeIso2022jp(f(text(files[path]!)));
}

test('messy SS-MIX2 storage: each case is defined, reported with file, line and field, counted, and never throws', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-ssmix2-messy-'));
  try {
    const { files, at } = patients(8);
    const obx = (t: string, code: string, f: (seg: string) => string) => t.split('\r').map((s) => (s.startsWith('OBX|') && s.split('|')[3]!.startsWith(`${code}^`) ? f(s) : s)).join('\r');
    const setField = (seg: string, n: number, v: string) => seg.split('|').map((x, i) => (i === n ? v : x)).join('|');
    // 0: cholesterol in mmol/L → converted to mg/dL with the molar mass the mapping gives.
    edit(files, at(0, 'OML-11'), (t) => obx(t, '3F050000002327101', (s) => setField(setField(s, 5, '5.2'), 6, 'mmol/L^mmol/L^ISO+')));
    // 1: a second physiological test a month earlier with another blood pressure: the later one wins. An HDL result (a code outside the mapping) is not selected.
    const bp1 = at(1, 'OMG-13');
    const early = text(files[bp1]!).replace(/19870102/g, '19861202');
    files[join('ssmix2', storagePath(ssmix2PatientId(0, 1), '19861202', 'OMG-13', '198612020000002', '19861202130000000', '01'))] = encodeIso2022jp(obx(early, '8480-6', (s) => setField(s, 5, '99')));
    edit(files, at(1, 'OML-11'), (t) => t + 'OBX|3|NM|HDL^HDLコレステロール^99LAB||50|mg/dL^mg/dL^ISO+|||||F|||198701021000\r');
    // 2: blood pressure in kg (cannot be converted), chest pain type 5 (outside the column's map).
    edit(files, at(2, 'OMG-13'), (t) => obx(obx(t, '8480-6', (s) => setField(s, 6, 'kg^kg^ISO+')), 'cp', (s) => setField(s, 5, '5^不明^99CPT')));
    // 3: cholesterol recorded without a value; the thalach segment broken by an undefined escape.
    edit(files, at(3, 'OML-11'), (t) => obx(t, '3F050000002327101', (s) => setField(s, 5, '')));
    edit(files, at(3, 'OMG-13'), (t) => obx(t, 'thalach', (s) => setField(s, 5, '17\\Q\\1')));
    // 4: the lab file holds an ORM^O01 (not a message type of OML-11).
    edit(files, at(4, 'OML-11'), (t) => t.replace('OUL^R22^OUL_R22', 'ORM^O01^ORM_O01'));
    // 5: a numeric result that is not a number; an older version (condition flag 2) with another value is history, not read.
    edit(files, at(5, 'OMG-13'), (t) => obx(t, 'oldpeak', (s) => setField(s, 5, '2,3')));
    files[at(5, 'OML-11').replace(/_1$/, '_2').replace('12000000', '11000000')] = encodeIso2022jp(obx(text(files[at(5, 'OML-11')]!), '3F050000002327101', (s) => setField(s, 5, '999')));
    // 6: the demographics filed under patient 6 name another patient; the lab file is not ISO-2022-JP.
    edit(files, at(6, 'ADT-00'), (t) => t.replace(`|${ssmix2PatientId(0, 6)}^^^^PI|`, `|${ssmix2PatientId(0, 7)}^^^^PI|`));
    files[at(6, 'OML-11')] = Uint8Array.from([...Buffer.from('MSH|^~\\&|HIS\r'), 0x93, 0x8c]);
    // 7: a file name that does not follow the layout, and a folder that is no SS-MIX2 data type.
    const p7 = at(7, 'OMG-13');
    files[p7.replace(/_1$/, '_x_1')] = files[p7]!;
    delete files[p7];
    files[join('ssmix2', storagePath(ssmix2PatientId(0, 7), '19870108', 'XYZ-99', '-', '19870108130000000', '01'))] = 'anything';
    writeFiles(dir, files);

    const ex = await extract(dataset(), { configDir: dir });
    const row = (line: number) => Object.fromEntries(ex.table.header.map((h, j) => [h, ex.table.rows[ex.table.patients.indexOf(ssmix2PatientId(0, line))]![j]]));
    const why = (line: number, col: string) => ex.table.why[ex.table.patients.indexOf(ssmix2PatientId(0, line))]![ex.table.header.indexOf(col)];
    assert.ok(Math.abs(Number(row(0)['chol']) - 5.2 * 38.665) < 1e-9, `mmol/L converted: ${row(0)['chol']}`);
    const uci = heartRecords(0);
    assert.equal(row(1)['trestbps'], uci[1]!.cells.trestbps, 'the latest of two readings (the visit day\'s), not the month-earlier 99');
    assert.equal(row(1)['chol'], uci[1]!.cells.chol, 'the HDL result is not cholesterol');
    assert.equal(why(2, 'trestbps'), 'unit-not-convertible');
    assert.equal(why(2, 'cp'), 'unmapped-code');
    assert.equal(why(3, 'chol'), 'missing-value');
    assert.equal(why(3, 'thalach'), 'missing-value');
    assert.equal(why(4, 'chol'), 'missing-value');
    assert.equal(why(5, 'oldpeak'), 'missing-value');
    assert.equal(row(5)['chol'], uci[5]!.cells.chol, 'the current file, not the history version');
    assert.equal(ex.table.patients.includes(ssmix2PatientId(0, 6)), false, 'no demographics that can be trusted: not in the table');
    assert.equal(row(7)['thalach'], null, 'its physiological test file was not read');

    const of = (reason: string) => ex.issues.list.filter((i) => i.reason === reason);
    assert.deepEqual(ex.issues.counts(), [
      { reason: 'unmapped-code', count: 1 },
      { reason: 'unit-not-convertible', count: 1 },
      { reason: 'invalid-value', count: 2 },
      { reason: 'malformed-record', count: 3 },
      { reason: 'unknown-profile', count: 1 },
      { reason: 'broken-segment', count: 1 },
      { reason: 'no-patient', count: 9 },
    ]);
    const broken = of('broken-segment')[0]!;
    assert.match(broken.ref, /\/1000000003\/19870104\/OMG-13\/1000000003_19870104_OMG-13_\d{15}_\d{17}_01_1:7$/);
    assert.equal(broken.field, 'OBX-5');
    assert.match(broken.detail, /\\Q\\ is not an HL7 escape sequence/);
    const profile = of('unknown-profile')[0]!;
    assert.equal(profile.field, 'MSH-9');
    assert.match(profile.detail, /ORM\^O01; SS-MIX2 OML-11 holds OUL\^R22/);
    assert.deepEqual(of('invalid-value').map((i) => i.field).sort(), ['OBX-5.1', 'PID-3']);
    assert.deepEqual(of('malformed-record').map((i) => i.field).sort(), ['data type folder', 'encoding', 'file name']);
    assert.equal(of('unit-not-convertible')[0]!.field, 'trestbps');
    assert.match(of('unit-not-convertible')[0]!.ref, /OMG-13.*:\d+ \(OBX\)$/);
    assert.match(of('unmapped-code')[0]!.detail, /urn:setu:uci-heart:cp\|5/);
    // Patient 6's other records (its visit, its test results, its enrolment) name a patient without demographics: each is reported.
    assert.ok(of('no-patient').every((i) => i.ref.includes('/1000000006/') || /enrolment\.csv:\d+$/.test(i.ref)), JSON.stringify(of('no-patient')));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('prescriptions (OMP-01, RDE^O11) become facts: a mapping column can ask who was prescribed a beta blocker', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-ssmix2-rx-'));
  try {
    const { files } = patients(3);
    const id = ssmix2PatientId(0, 1);
    // Bisoprolol (メインテート錠５ｍｇ, HOT9 102562001) for patient 1; a cancelled order (ORC-1 CA) for patient 2.
    const rde = (pid: string, control: string, orc1: string) => encodeIso2022jp([
      `MSH|^~\\&|HIS|CLEVELAND|GW|RCV|19861220100000||RDE^O11^RDE_O11|${pid}9|P|2.5||||||~ISO IR87||ISO 2022-1994`,
      `PID|0001||${pid}^^^^PI||患者^1^^^^^L^I||19320102|M`,
      'PV1|0001|O|01^^^^^C',
      `ORC|${orc1}|${control}||1|||||19861220100000`,
      'RXE||102562001^メインテート錠５ｍｇ^HOT9|1||TAB^錠^MR9P|||||28|TAB^錠^MR9P',
      'TQ1|1||1013044400000000&内服・経口・１日１回朝食後&JAMISDP01|||28^d|19861220',
      'RXR|PO^口^HL70162',
    ].join('\r') + '\r');
    files[join('ssmix2', storagePath(id, '19861220', 'OMP-01', '198612200000001', '19861220100000000', '01'))] = rde(id, '198612200000001', 'NW');
    const id2 = ssmix2PatientId(0, 2);
    files[join('ssmix2', storagePath(id2, '19861220', 'OMP-01', '198612200000002', '19861220100000000', '01'))] = rde(id2, '198612200000002', 'CA');
    writeFiles(dir, files);
    const m = YAML.parse(readFileSync(mappingPath('setu:heart-ssmix2', dir), 'utf8')) as { columns: Record<string, unknown> };
    m.columns['betablocker'] = { kind: 'prescription', codes: [{ system: 'urn:oid:1.2.392.200119.4.403.1', code: '102562001' }], window: { beforeDays: 90 }, pick: 'exists' };
    m.columns['bisoprololTabs'] = { kind: 'prescription', codes: [{ system: 'urn:oid:1.2.392.200119.4.403.1', code: '102562001' }], window: { beforeDays: 90 } };
    writeFileSync(join(dir, 'with-drugs.yaml'), YAML.stringify(m));
    const ex = await extract(dataset('with-drugs.yaml'), { configDir: dir });
    assert.deepEqual(ex.issues.list, []);
    const col = (name: string) => ex.table.rows.map((r) => r[ex.table.header.indexOf(name)]);
    assert.deepEqual(col('betablocker'), ['0', '1', '0'], 'patient 2\'s order was cancelled');
    assert.deepEqual(col('bisoprololTabs'), [null, '1', null], 'the dose (RXE-3)');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a gateway that writes UTF-8 is read when the config says so, and refused by the default ISO-2022-JP', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-ssmix2-utf8-'));
  try {
    const { files } = patients(4);
    writeFiles(join(dir, 'jis'), files);
    const utf8: Files = Object.fromEntries(Object.entries(files).map(([p, b]) => [p, p.endsWith('.csv') ? b : Buffer.from(text(b), 'utf8')]));
    writeFiles(join(dir, 'utf8'), utf8);
    const jis = await extract(dataset(), { configDir: join(dir, 'jis') });
    const asUtf8 = await extract({ ...dataset(), storage: { root: 'ssmix2', encoding: 'utf-8' } }, { configDir: join(dir, 'utf8') });
    assert.deepEqual(asUtf8.issues.list, []);
    assert.deepEqual(asUtf8.table.rows, jis.table.rows);
    const wrong = await extract(dataset(), { configDir: join(dir, 'utf8') });
    assert.ok(wrong.issues.list.length > 0 && wrong.issues.list.every((i) => i.reason === 'malformed-record' && i.field === 'encoding' || i.reason === 'no-patient'), JSON.stringify(wrong.issues.counts()));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the site config names the storage with its fields; a bad mapping block names the field', () => {
  const cfg = (ds: string) => parseSiteConfig(`coordinator: https://c.example\ndatasets:\n  heart: ${ds}\n`, '/etc/setu/site.yaml');
  const ok = cfg('{ format: ss-mix2, storage: { root: /mnt/ss2, encoding: shift_jis }, mapping: setu:heart-ssmix2, enrolment: { file: e.csv, patient: patient_id } }');
  assert.equal(ok.datasets['heart']!.format, 'ss-mix2');
  assert.throws(() => cfg('{ format: ss-mix2, storage: { root: /mnt/ss2, encoding: euc-jp }, mapping: setu:heart-ssmix2 }'), (e: unknown) => e instanceof ConfigError && /site\.yaml: \/datasets\/heart/.test((e as Error).message));
  // The dataset's own fields, as the site config's union of formats reports them once it names the variant.
  assert.match(checkValue(Ssmix2DatasetSchema, { format: 'ss-mix2', storage: { root: '/mnt', encoding: 'euc-jp' }, mapping: 'm' }).join('; '), /\/storage\/encoding/);
  assert.match(checkValue(Ssmix2DatasetSchema, { format: 'ss-mix2', storage: { dir: '/mnt' }, mapping: 'm' }).join('; '), /\/storage\/root/);
  const base = readFileSync(mappingPath('setu:heart-ssmix2', '/'), 'utf8');
  assert.throws(() => ssmix2Block(parseMapping(base.replace('segment: OBX', 'segment: obx'), 'm.yaml')), (e: unknown) => e instanceof MappingError && /m\.yaml: \/ss-mix2\/views\/2\/segment/.test((e as Error).message));
  assert.throws(() => ssmix2Block(parseMapping(base.replace('value: OBX-5.1', 'value: OBX5'), 'm.yaml')), (e: unknown) => e instanceof MappingError && /\/ss-mix2\/views\/2\/facts\/0\/value: "OBX5" is not an HL7 path/.test((e as Error).message));
  assert.throws(() => ssmix2Block(parseMapping(base.replace('dataTypes: [OMP-01]', 'dataTypes: [OMP-99]'), 'm.yaml')), (e: unknown) => e instanceof MappingError && /\/ss-mix2\/views\/3\/dataTypes/.test((e as Error).message));
  const lines = ssmix2Explain(loadMapping('setu:heart-ssmix2', '/'));
  assert.ok(lines.some((l) => /facts of kind "result": one per OBX segment in OML-11 \(OUL\^R22\), OMG-13 \(ORU\^R01\)/.test(l)), lines.join('\n'));
  assert.ok(lines.some((l) => /date = OBX-14 \| OBR-7 \| \$date/.test(l)));
});
