/**
 * OMOP CDM v5.4 → facts with SQL the site can read and audit (`omopQueries` prints it). One query per
 * domain the mapping uses, each restricted to the cohort (persons with a visit of the index concepts
 * inside one of their observation periods) and to the concepts the mapping names,
 * resolved through the `concept` table by vocabulary and code, so the mapping does not depend on one
 * OMOP instance's concept ids. The same SQL runs on PostgreSQL and SQLite (dates read as text).
 * This SQL reads the hospital's own database, never Setu's state.
 */
import { Type, type Static } from '@sinclair/typebox';
import { sourceBlock, type Code, type Mapping } from '../mapping.js';

export const OmopMappingSchema = Type.Object(
  {
    cdmVersion: Type.Literal('5.4'),
    /** OMOP vocabulary_id → code system URI (and back, for the SQL). */
    vocabularies: Type.Record(Type.String({ minLength: 1 }), Type.String({ minLength: 1 })),
  },
  { additionalProperties: false },
);
export type OmopMapping = Static<typeof OmopMappingSchema>;

/** Fact kinds and the CDM tables they come from. */
export const DOMAINS = {
  visit: { table: 'visit_occurrence', concept: 'visit_concept_id', date: 'visit_start_date', id: 'visit_occurrence_id', value: 'NULL', valueConcept: 'NULL', unit: 'NULL' },
  measurement: { table: 'measurement', concept: 'measurement_concept_id', date: 'measurement_date', id: 'measurement_id', value: 'x.value_as_number', valueConcept: 'x.value_as_concept_id', unit: 'x.unit_concept_id' },
  observation: { table: 'observation', concept: 'observation_concept_id', date: 'observation_date', id: 'observation_id', value: 'COALESCE(CAST(x.value_as_number AS TEXT), x.value_as_string)', valueConcept: 'x.value_as_concept_id', unit: 'x.unit_concept_id' },
  condition: { table: 'condition_occurrence', concept: 'condition_concept_id', date: 'condition_start_date', id: 'condition_occurrence_id', value: 'NULL', valueConcept: 'NULL', unit: 'NULL' },
  drug: { table: 'drug_exposure', concept: 'drug_concept_id', date: 'drug_exposure_start_date', id: 'drug_exposure_id', value: 'x.quantity', valueConcept: 'NULL', unit: 'NULL' },
} as const;
export type Domain = keyof typeof DOMAINS;

export function omopBlock(m: Mapping): OmopMapping {
  return sourceBlock(m, 'omop', OmopMappingSchema);
}

const lit = (s: string) => `'${s.replace(/'/g, "''")}'`;

function conceptFilter(codes: Code[] | undefined, b: OmopMapping, col: string): string {
  if (!codes) return '';
  const byUri = new Map(Object.entries(b.vocabularies).map(([v, uri]) => [uri, v]));
  const ors = codes.map((c) => {
    const vocab = c.system ? byUri.get(c.system) : undefined;
    if (c.system && !vocab) throw new Error(`omop: code system ${c.system} has no OMOP vocabulary in the mapping's vocabularies`);
    return `(c.concept_code = ${lit(c.code)}${vocab ? ` AND c.vocabulary_id = ${lit(vocab)}` : ''})`;
  });
  return `\n  AND x.${col} IN (SELECT c.concept_id FROM concept c WHERE ${ors.join(' OR ')})`;
}

export interface OmopQuery {
  kind: string;
  table: string;
  sql: string;
}

/** The cohort: persons with an index visit of the mapping's concepts that lies inside one of their observation periods. */
function cohortSql(m: Mapping, b: OmopMapping): string {
  const idx = m.cohort.index;
  if (idx.kind !== 'visit') throw new Error(`omop: the cohort's index kind must be "visit" (a visit_occurrence), got "${idx.kind}"`);
  return `SELECT DISTINCT x.person_id FROM visit_occurrence x
  JOIN observation_period op ON op.person_id = x.person_id
   AND op.observation_period_start_date <= x.visit_start_date AND x.visit_start_date <= op.observation_period_end_date
  WHERE 1 = 1${conceptFilter(idx.codes, b, 'visit_concept_id')}`;
}

/** Every query the mapping needs, in order: demographics, then one per domain it uses. */
export function omopQueries(m: Mapping): OmopQuery[] {
  const b = omopBlock(m);
  const cohort = cohortSql(m, b);
  const out: OmopQuery[] = [
    {
      kind: 'patient',
      table: 'person',
      sql: `-- demographics of the cohort: gender as its Gender vocabulary code, birth date from its parts
SELECT CAST(p.person_id AS TEXT) AS patient, g.concept_code AS gender,
  CAST(p.year_of_birth AS TEXT) AS y, CAST(p.month_of_birth AS TEXT) AS m, CAST(p.day_of_birth AS TEXT) AS d
FROM person p LEFT JOIN concept g ON g.concept_id = p.gender_concept_id
WHERE p.person_id IN (${cohort})
ORDER BY p.person_id`,
    },
  ];
  const kinds = new Map<Domain, Code[] | undefined | null>();
  const want = (kind: string, codes: Code[] | undefined) => {
    if (kind === 'patient' || kind === 'enrolment') return;
    if (!(kind in DOMAINS)) throw new Error(`omop: fact kind "${kind}" is not an OMOP domain (${Object.keys(DOMAINS).join(', ')}, patient, enrolment)`);
    const prev = kinds.get(kind as Domain);
    // null: some column wants every fact of the domain.
    kinds.set(kind as Domain, prev === null || !codes ? null : [...(prev ?? []), ...codes]);
  };
  want(m.cohort.index.kind, m.cohort.index.codes);
  for (const c of Object.values(m.columns)) if (!('ageAt' in c)) want(c.kind, c.codes);
  for (const [kind, codes] of kinds) {
    const d = DOMAINS[kind];
    out.push({
      kind,
      table: d.table,
      sql: `-- ${kind}: ${d.table} rows of the cohort with the mapping's concepts, codes and units by vocabulary
SELECT CAST(x.person_id AS TEXT) AS patient, CAST(x.${d.id} AS TEXT) AS id, c.vocabulary_id AS vocabulary, c.concept_code AS code,
  CAST(x.${d.date} AS TEXT) AS date, CAST(${d.value} AS TEXT) AS value, vc.vocabulary_id AS value_vocabulary, vc.concept_code AS value_code, u.concept_code AS unit
FROM ${d.table} x
  JOIN concept c ON c.concept_id = x.${d.concept}
  LEFT JOIN concept vc ON vc.concept_id = ${d.valueConcept}
  LEFT JOIN concept u ON u.concept_id = ${d.unit}
WHERE x.person_id IN (${cohort})${conceptFilter(codes ?? undefined, b, d.concept)}
ORDER BY x.person_id, x.${d.id}`,
    });
  }
  return out;
}
