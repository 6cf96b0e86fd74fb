import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HEART_CENTERS, loadHeartCenter, type HeartCenter } from '../../site/data/heart.js';
import { loadTabular, normaliseTabular } from '../../site/data/tabular.js';
import { HEART_DATA_SCHEMA } from '../../tools/heart-csv.js';
import { heartBundles, heartNdjson, type HeartProfile } from '../../tools/heart-fhir.js';
import { asCsvTable, extract, type Extraction } from '../extract.js';
import type { FhirDataset } from '../config.js';
import { MappingError } from '../mapping.js';

function writeAll(dir: string, files: Record<string, string>): string {
  mkdirSync(dir, { recursive: true });
  for (const [f, t] of Object.entries(files)) writeFileSync(join(dir, f), t);
  return dir;
}

/** The extracted table through the CSV path's loader, against the bundled heart loader. */
function assertHeartIdentical(ex: Extraction, c: HeartCenter): void {
  const want = loadHeartCenter(undefined, c);
  const got = normaliseTabular(loadTabular(asCsvTable(ex.table, 'x'), HEART_DATA_SCHEMA), HEART_DATA_SCHEMA);
  for (const part of ['train', 'test'] as const) {
    assert.equal(got[part].n, want[part].n, `${HEART_CENTERS[c]} ${part} rows`);
    assert.deepEqual(Array.from(got[part].x), Array.from(want[part].x), `${HEART_CENTERS[c]} ${part} features`);
    assert.deepEqual(Array.from(got[part].y), Array.from(want[part].y), `${HEART_CENTERS[c]} ${part} labels`);
  }
}

const ds = (source: FhirDataset['source'], profile: HeartProfile, licences = profile === 'nrces'): FhirDataset => ({ format: 'fhir', source, mapping: `setu:heart-fhir-${profile}`, ...(licences ? { licences: ['snomed-ct'] } : {}) });

test('FHIR Bulk NDJSON (NRCeS and JP Core) and ABDM document Bundles give the heart loader\'s numbers bit for bit', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-fhir-'));
  try {
    for (const profile of ['nrces', 'jpcore'] as const) {
      for (let c = 0; c < 4; c++) {
        const d = writeAll(join(dir, `${profile}-${c}`), heartNdjson(c as HeartCenter, profile));
        const ex = await extract(ds({ kind: 'ndjson', dir: d }, profile), { configDir: dir });
        assert.deepEqual(ex.issues.list, [], 'the converted export is clean');
        assertHeartIdentical(ex, c as HeartCenter);
      }
    }
    const b = writeAll(join(dir, 'bundles'), heartBundles(2, 'nrces'));
    const ex = await extract(ds({ kind: 'bundles', dir: b }, 'nrces'), { configDir: dir });
    assert.deepEqual(ex.issues.list, []);
    assertHeartIdentical(ex, 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a mapping that uses SNOMED CT needs the site to declare its licence', async () => {
  await assert.rejects(extract(ds({ kind: 'ndjson', dir: '/nonexistent' }, 'nrces', false), { configDir: '/' }), (e: unknown) => e instanceof MappingError && /SNOMED CT.*licences/.test((e as Error).message));
});

test('messy FHIR: each case is defined, reported with file/line or resource id and field, and counted', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-fhir-messy-'));
  try {
    // Five patients of cleveland, made messy one way each.
    const files = heartNdjson(0, 'nrces');
    const keep = (t: string, ids: string[]) => t.split('\n').filter((l) => ids.some((id) => l.includes(`"cleveland-${id}`))).join('\n') + '\n';
    const ids = ['0000', '0001', '0002', '0003', '0004'];
    const obs = keep(files['Observation.ndjson']!, ids).trim().split('\n').map((l) => JSON.parse(l) as Record<string, any>);
    const find = (id: string) => obs.find((o) => o.id === id)!;
    // 0000: cholesterol in mmol/L under LOINC 14647-2 → converted to mg/dL with the molar mass.
    Object.assign(find('cleveland-0000-chol'), { code: { coding: [{ system: 'http://loinc.org', code: '14647-2' }] }, valueQuantity: { value: 5.2, unit: 'mmol/L', system: 'http://unitsofmeasure.org', code: 'mmol/L' } });
    // 0001: a second, later blood pressure (duplicate with another date): the latest wins; and an HDL (code outside the mapping): ignored.
    const bp = find('cleveland-0001-bp');
    obs.push({ ...bp, id: 'cleveland-0001-bp2', effectiveDateTime: '1987-01-01', valueQuantity: { ...bp.valueQuantity, value: 99 } });
    bp.effectiveDateTime = '1986-12-01';
    obs.push({ ...bp, id: 'cleveland-0001-hdl', code: { coding: [{ system: 'http://loinc.org', code: '2085-9' }] } });
    // 0002: blood pressure in kg (cannot be converted), and chest pain coded outside the mapping.
    find('cleveland-0002-bp').valueQuantity = { value: 80, unit: 'kg', system: 'http://unitsofmeasure.org', code: 'kg' };
    find('cleveland-0002-cp').valueCodeableConcept = { coding: [{ system: 'http://snomed.info/sct', code: '22298006' }] };
    // 0003: cholesterol absent (dataAbsentReason), and an Observation claiming US Core's profile.
    const ch = find('cleveland-0003-chol');
    delete ch.valueQuantity;
    ch.dataAbsentReason = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/data-absent-reason', code: 'not-performed' }] };
    find('cleveland-0003-bp').meta = { profile: ['http://hl7.org/fhir/us/core/StructureDefinition/us-core-blood-pressure'] };
    // 0004: two different cholesterol values on the same date conflict.
    obs.push({ ...find('cleveland-0004-chol'), id: 'cleveland-0004-chol2', valueQuantity: { value: 301, unit: 'mg/dL', system: 'http://unitsofmeasure.org', code: 'mg/dL' } });
    const d = writeAll(join(dir, 'export'), {
      'Patient.ndjson': keep(files['Patient.ndjson']!, ids),
      'Encounter.ndjson': keep(files['Encounter.ndjson']!, ids),
      'ResearchSubject.ndjson': keep(files['ResearchSubject.ndjson']!, ids),
      'Observation.ndjson': obs.map((o) => JSON.stringify(o)).join('\n') + '\n{"resourceType": "Observation", "id": \n',
    });
    const ex = await extract(ds({ kind: 'ndjson', dir: d }, 'nrces'), { configDir: dir });
    const rows = Object.fromEntries(ex.table.patients.map((p, i) => [p, Object.fromEntries(ex.table.header.map((h, j) => [h, ex.table.rows[i]![j]]))]));
    assert.ok(Math.abs(Number(rows['cleveland-0000']!['chol']) - 5.2 * 38.665) < 1e-9, `mmol/L converted: ${rows['cleveland-0000']!['chol']}`);
    assert.equal(rows['cleveland-0001']!['trestbps'], '99', 'the later of two readings');
    assert.equal(rows['cleveland-0002']!['trestbps'], null);
    assert.equal(rows['cleveland-0002']!['cp'], null);
    assert.equal(rows['cleveland-0003']!['chol'], null);
    assert.equal(rows['cleveland-0003']!['trestbps'], null);
    assert.equal(rows['cleveland-0004']!['chol'], null);
    const why = (p: string, col: string) => ex.table.why[ex.table.patients.indexOf(p)]![ex.table.header.indexOf(col)];
    assert.equal(why('cleveland-0002', 'trestbps'), 'unit-not-convertible');
    assert.equal(why('cleveland-0002', 'cp'), 'unmapped-code');
    assert.equal(why('cleveland-0003', 'chol'), 'missing-value');
    assert.equal(why('cleveland-0004', 'chol'), 'conflicting-values');
    const byReason = (r: string) => ex.issues.list.filter((i) => i.reason === r);
    assert.deepEqual(ex.issues.counts(), [
      { reason: 'unmapped-code', count: 1 },
      { reason: 'unit-not-convertible', count: 1 },
      { reason: 'conflicting-values', count: 1 },
      { reason: 'malformed-record', count: 1 },
      { reason: 'unknown-profile', count: 1 },
    ]);
    assert.match(byReason('malformed-record')[0]!.ref, /Observation\.ndjson:\d+$/);
    assert.match(byReason('unknown-profile')[0]!.ref, /^Observation\/cleveland-0003-bp /);
    assert.equal(byReason('unknown-profile')[0]!.field, 'meta.profile');
    assert.equal(byReason('unit-not-convertible')[0]!.field, 'trestbps');
    assert.match(byReason('unmapped-code')[0]!.detail, /http:\/\/snomed\.info\/sct\|22298006/);

    // A folder of Bundles with one that is not a document: reported, the rest read.
    const bundles = heartBundles(2, 'nrces');
    const [first] = Object.keys(bundles);
    bundles[first!] = bundles[first!]!.replace('"type": "document"', '"type": "collection"');
    const b = writeAll(join(dir, 'bundles'), bundles);
    const exb = await extract(ds({ kind: 'bundles', dir: b }, 'nrces'), { configDir: dir });
    assert.deepEqual(exb.issues.counts(), [{ reason: 'not-a-document', count: 1 }]);
    assert.equal(exb.issues.list[0]!.field, 'Bundle.type');
    assert.equal(exb.table.rows.length, 122);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
