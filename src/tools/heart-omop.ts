/**
 * Fed-Heart-Disease hospitals as OMOP CDM v5.4: a SQL script per hospital (the CDM tables the mapping
 * reads, with their v5.4 column names and types, a subset of each table's columns) that runs on
 * PostgreSQL and SQLite alike, and the study's enrolment list (person_id → train/test). Each UCI row is a
 * person, an observation period, an outpatient visit (the index date), measurements (LOINC blood
 * pressure and cholesterol, UCUM units) and observations (the study's own items, chest pain as a SNOMED
 * CT value concept). Standard concept ids where every OMOP instance has them (gender 8507/8532, outpatient
 * visit 9202); the rest are local 2-billion concepts, since the mapping finds concepts by vocabulary
 * and code, not by id.
 */
import type { HeartCenter } from '../site/data/heart.js';
import { heartRecords } from './heart-csv.js';
import { birthDate, CP_SNOMED, visitDate } from './heart-fhir.js';

export const OMOP_DDL = `
CREATE TABLE concept (concept_id INTEGER PRIMARY KEY, concept_name VARCHAR(255) NOT NULL, domain_id VARCHAR(20) NOT NULL, vocabulary_id VARCHAR(20) NOT NULL, concept_class_id VARCHAR(20) NOT NULL, standard_concept VARCHAR(1), concept_code VARCHAR(50) NOT NULL, valid_start_date DATE NOT NULL, valid_end_date DATE NOT NULL);
CREATE TABLE person (person_id INTEGER PRIMARY KEY, gender_concept_id INTEGER NOT NULL, year_of_birth INTEGER NOT NULL, month_of_birth INTEGER, day_of_birth INTEGER, race_concept_id INTEGER NOT NULL, ethnicity_concept_id INTEGER NOT NULL);
CREATE TABLE observation_period (observation_period_id INTEGER PRIMARY KEY, person_id INTEGER NOT NULL, observation_period_start_date DATE NOT NULL, observation_period_end_date DATE NOT NULL, period_type_concept_id INTEGER NOT NULL);
CREATE TABLE visit_occurrence (visit_occurrence_id INTEGER PRIMARY KEY, person_id INTEGER NOT NULL, visit_concept_id INTEGER NOT NULL, visit_start_date DATE NOT NULL, visit_end_date DATE NOT NULL, visit_type_concept_id INTEGER NOT NULL);
CREATE TABLE measurement (measurement_id INTEGER PRIMARY KEY, person_id INTEGER NOT NULL, measurement_concept_id INTEGER NOT NULL, measurement_date DATE NOT NULL, measurement_type_concept_id INTEGER NOT NULL, value_as_number NUMERIC, value_as_concept_id INTEGER, unit_concept_id INTEGER, visit_occurrence_id INTEGER);
CREATE TABLE observation (observation_id INTEGER PRIMARY KEY, person_id INTEGER NOT NULL, observation_concept_id INTEGER NOT NULL, observation_date DATE NOT NULL, observation_type_concept_id INTEGER NOT NULL, value_as_number NUMERIC, value_as_string VARCHAR(60), value_as_concept_id INTEGER, unit_concept_id INTEGER, visit_occurrence_id INTEGER);
`;

/** [id, name, domain, vocabulary, class, code] */
const CONCEPTS: Array<[number, string, string, string, string, string]> = [
  [8507, 'MALE', 'Gender', 'Gender', 'Gender', 'M'],
  [8532, 'FEMALE', 'Gender', 'Gender', 'Gender', 'F'],
  [9202, 'Outpatient Visit', 'Visit', 'Visit', 'Visit', 'OP'],
  [2000000001, 'Systolic blood pressure', 'Measurement', 'LOINC', 'Clinical Observation', '8480-6'],
  [2000000002, 'Cholesterol [Mass/volume] in Serum or Plasma', 'Measurement', 'LOINC', 'Lab Test', '2093-3'],
  [2000000003, 'Maximum heart rate achieved (exercise test)', 'Measurement', 'Setu UCI', 'Clinical Observation', 'thalach'],
  [2000000004, 'ST depression induced by exercise', 'Measurement', 'Setu UCI', 'Clinical Observation', 'oldpeak'],
  [2000000005, 'Fasting blood sugar > 120 mg/dL', 'Observation', 'Setu UCI', 'Clinical Observation', 'fbs'],
  [2000000006, 'Exercise induced angina', 'Observation', 'Setu UCI', 'Clinical Observation', 'exang'],
  [2000000007, 'Chest pain type', 'Observation', 'Setu UCI', 'Clinical Observation', 'cp'],
  [2000000008, 'Resting electrocardiographic result', 'Observation', 'Setu UCI', 'Clinical Observation', 'restecg'],
  [2000000009, 'Angiographic disease status', 'Observation', 'Setu UCI', 'Clinical Observation', 'num'],
  [2000000010, 'millimeter mercury column', 'Unit', 'UCUM', 'Unit', 'mm[Hg]'],
  [2000000011, 'milligram per deciliter', 'Unit', 'UCUM', 'Unit', 'mg/dL'],
  [2000000012, 'per minute', 'Unit', 'UCUM', 'Unit', '/min'],
  [2000000013, 'millimeter', 'Unit', 'UCUM', 'Unit', 'mm'],
  ...Object.entries(CP_SNOMED).map(([, code], i) => [2000000020 + i, ['Typical angina', 'Atypical angina', 'Noncardiac chest pain', 'Chest pain not present'][i]!, 'Condition', 'SNOMED', 'Clinical Finding', code] as [number, string, string, string, string, string]),
];
const CID = Object.fromEntries(CONCEPTS.map(([id, , , v, , code]) => [`${v}|${code}`, id]));

const q = (s: string) => `'${s.replace(/'/g, "''")}'`;

/** The SQL script that creates and fills one hospital's CDM tables. */
export function heartOmopSql(center: HeartCenter): string {
  const out = [OMOP_DDL.trim()];
  out.push(...CONCEPTS.map(([id, name, domain, vocab, cls, code]) => `INSERT INTO concept VALUES (${id}, ${q(name)}, ${q(domain)}, ${q(vocab)}, ${q(cls)}, 'S', ${q(code)}, '1970-01-01', '2099-12-31');`));
  let mid = 0, oid = 0;
  for (const r of heartRecords(center)) {
    const pid = r.line + 1, date = visitDate(r.line), c = r.cells;
    const born = c.age === null ? null : birthDate(date, Number(c.age));
    const gender = c.sex === null ? 0 : Number(c.sex) === 1 ? 8507 : 8532;
    // A person without a recorded age has no year of birth, which the CDM requires: that row is not in the CDM at all.
    if (born === null) continue;
    out.push(`INSERT INTO person VALUES (${pid}, ${gender}, ${born.slice(0, 4)}, ${Number(born.slice(5, 7))}, ${Number(born.slice(8, 10))}, 0, 0);`);
    out.push(`INSERT INTO observation_period VALUES (${pid}, ${pid}, '1980-01-01', '1990-12-31', 32817);`);
    out.push(`INSERT INTO visit_occurrence VALUES (${pid}, ${pid}, 9202, '${date}', '${date}', 32817);`);
    const meas = (code: string, v: string | null, unit: string) => v !== null && out.push(`INSERT INTO measurement VALUES (${++mid}, ${pid}, ${CID[code]}, '${date}', 32817, ${v}, NULL, ${CID[`UCUM|${unit}`]}, ${pid});`);
    meas('LOINC|8480-6', c.trestbps, 'mm[Hg]');
    meas('LOINC|2093-3', c.chol, 'mg/dL');
    meas('Setu UCI|thalach', c.thalach, '/min');
    meas('Setu UCI|oldpeak', c.oldpeak, 'mm');
    const obs = (code: string, v: string | null, concept?: number) => v !== null && out.push(`INSERT INTO observation VALUES (${++oid}, ${pid}, ${CID[code]}, '${date}', 32817, ${concept ? 'NULL' : v}, NULL, ${concept ?? 'NULL'}, NULL, ${pid});`);
    obs('Setu UCI|fbs', c.fbs);
    obs('Setu UCI|exang', c.exang);
    obs('Setu UCI|cp', c.cp, c.cp === null ? undefined : CID[`SNOMED|${CP_SNOMED[String(Number(c.cp))]}`]);
    obs('Setu UCI|restecg', c.restecg);
    obs('Setu UCI|num', c.num);
  }
  return out.join('\n') + '\n';
}

/** The study's enrolment list for one hospital: person_id → FLamby's train/test assignment. */
export function heartOmopEnrolment(center: HeartCenter): string {
  return ['person_id,set', ...heartRecords(center).filter((r) => r.set !== null).map((r) => `${r.line + 1},${r.set}`)].join('\n') + '\n';
}
