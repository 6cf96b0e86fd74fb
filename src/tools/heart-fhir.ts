/**
 * Fed-Heart-Disease hospitals as FHIR R4: per hospital a Bulk Data export (one NDJSON file per resource
 * type) or a folder of ABDM-style document Bundles (one per visit), under the NRCeS (India) or JP Core
 * (Japan) profiles. Each UCI row is a Patient (gender, birth date so that the age at the visit is the
 * row's age), an Encounter (the index visit), LOINC-coded Observations where LOINC has the concept
 * (systolic blood pressure 8480-6, total cholesterol 2093-3; JLAC10 beside it under JP Core), Setu's
 * local UCI code system for the study's own items, SNOMED CT chest-pain types under NRCeS (India holds
 * a national licence), and a ResearchSubject carrying FLamby's train/test assignment as its arm.
 */
import { HEART_CENTERS, type HeartCenter } from '../site/data/heart.js';
import { heartRecords, type HeartRecord } from './heart-csv.js';

export type HeartProfile = 'nrces' | 'jpcore';
export const LOINC = 'http://loinc.org';
export const UCUM = 'http://unitsofmeasure.org';
export const SNOMED = 'http://snomed.info/sct';
export const JLAC10 = 'urn:oid:1.2.392.200119.4.504';
/** Setu's local code system for the UCI study items that LOINC has no code for. */
export const UCI = 'urn:setu:uci-heart';
const NRCES = 'https://nrces.in/ndhm/fhir/r4/StructureDefinition/';
const JPCORE = 'http://jpfhir.jp/fhir/core/StructureDefinition/';

export const PROFILES: Record<HeartProfile, Record<'Patient' | 'Encounter' | 'vital' | 'lab' | 'exam' | 'Composition' | 'Bundle', string>> = {
  nrces: { Patient: `${NRCES}Patient`, Encounter: `${NRCES}Encounter`, vital: `${NRCES}ObservationVitalSigns`, lab: `${NRCES}Observation`, exam: `${NRCES}Observation`, Composition: `${NRCES}OPConsultRecord`, Bundle: `${NRCES}DocumentBundle` },
  jpcore: { Patient: `${JPCORE}JP_Patient`, Encounter: `${JPCORE}JP_Encounter`, vital: `${JPCORE}JP_Observation_VitalSigns`, lab: `${JPCORE}JP_Observation_LabResult`, exam: `${JPCORE}JP_Observation_Common`, Composition: `${JPCORE}JP_Composition`, Bundle: `${JPCORE}JP_Bundle` },
};

/** UCI chest-pain type → SNOMED CT (DICOM CID 3202's concepts). */
export const CP_SNOMED: Record<string, string> = { '1': '429559004', '2': '371807002', '3': '274668005', '4': '161971004' };
const RESTECG = ['normal', 'st-t-abnormality', 'lv-hypertrophy'];

type Resource = Record<string, unknown> & { resourceType: string; id: string };

/** The index visit of row `line`: a day per row from 1987-01-01, so visits are distinct and ordered. */
export function visitDate(line: number): string {
  return new Date(Date.UTC(1987, 0, 1 + line)).toISOString().slice(0, 10);
}

/** A birth date `age` whole years before `date`. */
export function birthDate(date: string, age: number): string {
  return `${String(Number(date.slice(0, 4)) - age).padStart(4, '0')}${date.slice(4)}`;
}

export function patientId(center: HeartCenter, line: number): string {
  return `${HEART_CENTERS[center]}-${String(line).padStart(4, '0')}`;
}

/** The FHIR resources of one UCI row (missing values are simply not recorded, as in a real record). */
export function rowResources(center: HeartCenter, r: HeartRecord, profile: HeartProfile): Resource[] {
  const p = PROFILES[profile];
  const pid = patientId(center, r.line), date = visitDate(r.line), c = r.cells;
  const meta = (url: string) => ({ meta: { profile: [url] } });
  const subject = { reference: `Patient/${pid}` }, encounter = { reference: `Encounter/${pid}-v` };
  const out: Resource[] = [];
  out.push({ resourceType: 'Patient', id: pid, ...meta(p.Patient), ...(c.sex === null ? {} : { gender: Number(c.sex) === 1 ? 'male' : 'female' }), ...(c.age === null ? {} : { birthDate: birthDate(date, Number(c.age)) }) });
  out.push({ resourceType: 'Encounter', id: `${pid}-v`, ...meta(p.Encounter), status: 'finished', class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'AMB' }, subject, period: { start: date, end: date } });
  const obs = (key: string, prof: string, coding: Array<{ system: string; code: string; display?: string }>, value: Record<string, unknown>, category: string): void => {
    out.push({ resourceType: 'Observation', id: `${pid}-${key}`, ...meta(prof), status: 'final', category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: category }] }], code: { coding }, subject, encounter, effectiveDateTime: date, ...value });
  };
  const qty = (v: string, unit: string) => ({ valueQuantity: { value: Number(v), unit, system: UCUM, code: unit } });
  if (c.trestbps !== null) obs('bp', p.vital, [{ system: LOINC, code: '8480-6', display: 'Systolic blood pressure' }], qty(c.trestbps, 'mm[Hg]'), 'vital-signs');
  if (c.chol !== null) obs('chol', p.lab, [...(profile === 'jpcore' ? [{ system: JLAC10, code: '3F050000002327101' }] : []), { system: LOINC, code: '2093-3', display: 'Cholesterol [Mass/volume] in Serum or Plasma' }], qty(c.chol, 'mg/dL'), 'laboratory');
  if (c.fbs !== null) obs('fbs', p.lab, [{ system: UCI, code: 'fbs', display: 'Fasting blood sugar > 120 mg/dL' }], { valueBoolean: Number(c.fbs) === 1 }, 'laboratory');
  if (c.thalach !== null) obs('thalach', p.exam, [{ system: UCI, code: 'thalach', display: 'Maximum heart rate achieved (exercise test)' }], qty(c.thalach, '/min'), 'exam');
  if (c.exang !== null) obs('exang', p.exam, [{ system: UCI, code: 'exang', display: 'Exercise induced angina' }], { valueBoolean: Number(c.exang) === 1 }, 'exam');
  if (c.oldpeak !== null) obs('oldpeak', p.exam, [{ system: UCI, code: 'oldpeak', display: 'ST depression induced by exercise relative to rest' }], qty(c.oldpeak, 'mm'), 'exam');
  if (c.cp !== null) {
    const v = profile === 'nrces' ? { system: SNOMED, code: CP_SNOMED[String(Number(c.cp))]! } : { system: `${UCI}:cp`, code: String(Number(c.cp)) };
    obs('cp', p.exam, [{ system: UCI, code: 'cp', display: 'Chest pain type' }], { valueCodeableConcept: { coding: [v] } }, 'exam');
  }
  if (c.restecg !== null) obs('restecg', p.exam, [{ system: UCI, code: 'restecg', display: 'Resting electrocardiographic result' }], { valueCodeableConcept: { coding: [{ system: `${UCI}:restecg`, code: RESTECG[Number(c.restecg)]! }] } }, 'exam');
  if (c.num !== null) obs('num', p.exam, [{ system: UCI, code: 'num', display: 'Angiographic disease status (0: < 50% narrowing; 1-4: vessels > 50%)' }], { valueInteger: Number(c.num) }, 'exam');
  if (r.set !== null) out.push({ resourceType: 'ResearchSubject', id: `${pid}-rs`, status: 'on-study', study: { reference: 'ResearchStudy/fed-heart-disease' }, individual: subject, assignedArm: r.set });
  return out;
}

/** One hospital as a Bulk Data export: NDJSON text per resource type. */
export function heartNdjson(center: HeartCenter, profile: HeartProfile): Record<string, string> {
  const byType = new Map<string, string[]>();
  for (const r of heartRecords(center)) for (const res of rowResources(center, r, profile)) byType.set(res.resourceType, [...(byType.get(res.resourceType) ?? []), JSON.stringify(res)]);
  return Object.fromEntries([...byType].map(([t, lines]) => [`${t}.ndjson`, lines.join('\n') + '\n']));
}

/** One hospital as document Bundles, one per visit (references by urn:uuid, as ABDM senders write them). */
export function heartBundles(center: HeartCenter, profile: HeartProfile): Record<string, string> {
  const out: Record<string, string> = {};
  for (const r of heartRecords(center)) {
    const res = rowResources(center, r, profile);
    const uuid = (x: Resource) => `urn:uuid:${x.id}`;
    const byRef = new Map(res.map((x) => [`${x.resourceType}/${x.id}`, uuid(x)]));
    const relink = (node: unknown): unknown =>
      Array.isArray(node) ? node.map(relink) : node && typeof node === 'object' ? Object.fromEntries(Object.entries(node).map(([k, v]) => [k, k === 'reference' && typeof v === 'string' && byRef.has(v) ? byRef.get(v) : relink(v)])) : node;
    const pid = patientId(center, r.line), date = visitDate(r.line);
    const composition = { resourceType: 'Composition', id: `${pid}-doc`, meta: { profile: [PROFILES[profile].Composition] }, status: 'final', type: { coding: [{ system: SNOMED, code: '371530004', display: 'Clinical consultation report' }] }, subject: { reference: uuid(res[0]!) }, date, title: 'Consultation', section: [{ title: 'Findings', entry: res.slice(1).map((x) => ({ reference: uuid(x) })) }] };
    const bundle = { resourceType: 'Bundle', id: `${pid}-bundle`, meta: { profile: [PROFILES[profile].Bundle] }, identifier: { system: 'urn:setu:heart', value: pid }, type: 'document', timestamp: `${date}T00:00:00Z`, entry: [composition, ...res].map((x) => ({ fullUrl: uuid(x as Resource), resource: relink(x) })) };
    out[`${pid}.json`] = JSON.stringify(bundle, null, 1) + '\n';
  }
  return out;
}
