/**
 * A mapping: how one kind of source becomes the study's columns. It is declarative and versioned
 * (`mapping` + `version`), so two sites with different systems produce the same columns from files
 * anyone can read. The shared part below turns facts into columns; each source adds its own block
 * (`fhir`: SQL-on-FHIR ViewDefinitions; `omop`: vocabularies).
 *
 *   mapping: heart-fhir-nrces
 *   version: 1
 *   source: fhir
 *   cohort: { index: { kind: encounter, pick: earliest } }   # one row per patient with an index fact
 *   columns:
 *     age:  { ageAt: index }                                 # whole years from birthDate to the index date
 *     sex:  { kind: patient, codes: [{ code: gender }], map: { male: "1", female: "0" } }
 *     chol: { kind: observation, codes: [{ system: "http://loinc.org", code: 2093-3 }], unit: mg/dL, pick: latest }
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import YAML from 'yaml';
import { checkValue } from '../protocol/api.js';

const strict = { additionalProperties: false } as const;
const Name = Type.String({ minLength: 1 });

export const CodeSchema = Type.Object(
  {
    /** Code system URI; absent matches the code in any system (demographic attributes have none). */
    system: Type.Optional(Name),
    code: Name,
    /** g/mol, for converting mass concentrations of this analyte to amounts of substance and back. */
    molecularWeight: Type.Optional(Type.Number({ exclusiveMinimum: 0 })),
  },
  strict,
);
export type Code = Static<typeof CodeSchema>;

const Pick = Type.Union([Type.Literal('latest'), Type.Literal('earliest'), Type.Literal('only'), Type.Literal('exists'), Type.Literal('count')]);

export const FactColumnSchema = Type.Object(
  {
    /** Facts of this kind (a FHIR view's name, an OMOP domain, or `patient`). */
    kind: Name,
    /** Only facts with one of these codes (absent: every fact of the kind). */
    codes: Type.Optional(Type.Array(CodeSchema, { minItems: 1 })),
    /** The fact's value (default) or its date. */
    field: Type.Optional(Type.Union([Type.Literal('value'), Type.Literal('date')])),
    /** Convert each value to this UCUM unit; a value whose unit cannot be converted is left out. */
    unit: Type.Optional(Name),
    /** Days around the index date a fact may lie in (needs dated facts). */
    window: Type.Optional(Type.Object({ beforeDays: Type.Optional(Type.Integer({ minimum: 0 })), afterDays: Type.Optional(Type.Integer({ minimum: 0 })) }, strict)),
    /**
     * latest (default) / earliest: the value of the latest / earliest dated fact (two different values on that
     * date conflict); only: every fact must agree; exists: 1 if any fact, else 0; count: how many.
     */
    pick: Type.Optional(Pick),
    /** Value → table text. Keys are `system|code` for coded values or the plain value; a value not listed is an unmapped code. */
    map: Type.Optional(Type.Record(Type.String(), Type.String())),
  },
  strict,
);
export const AgeColumnSchema = Type.Object(
  {
    /** Whole years from the patient's birth date to the cohort's index date. */
    ageAt: Type.Literal('index'),
    /** Where the birth date is (default: kind `patient`, code `birthDate`). */
    kind: Type.Optional(Name),
    code: Type.Optional(Name),
  },
  strict,
);
export const ColumnSchema = Type.Union([AgeColumnSchema, FactColumnSchema]);
export type FactColumn = Static<typeof FactColumnSchema>;
export type Column = Static<typeof ColumnSchema>;

export const CohortSchema = Type.Object(
  {
    /** A patient is in the cohort when it has a fact like this; its date (earliest by default) is the index date. */
    index: Type.Object({ kind: Name, codes: Type.Optional(Type.Array(CodeSchema, { minItems: 1 })), pick: Type.Optional(Type.Union([Type.Literal('earliest'), Type.Literal('latest')])) }, strict),
  },
  strict,
);
export type Cohort = Static<typeof CohortSchema>;

export const SOURCE_FAMILIES = ['fhir', 'omop'] as const;
export type SourceFamily = (typeof SOURCE_FAMILIES)[number];

/** The shared part of every mapping; each source family validates its own block with `sourceBlock`. */
export const MappingBaseSchema = Type.Object(
  {
    mapping: Name,
    version: Type.Integer({ minimum: 1 }),
    source: Type.Union(SOURCE_FAMILIES.map((s) => Type.Literal(s))),
    description: Type.Optional(Type.String()),
    cohort: CohortSchema,
    /** Output columns in order: the names the study's data schema uses. */
    columns: Type.Record(Name, ColumnSchema, { minProperties: 1 }),
    /** Unit spellings a source uses that are not UCUM codes, e.g. { mmHg: "mm[Hg]" }. */
    unitAliases: Type.Optional(Type.Record(Name, Name)),
    fhir: Type.Optional(Type.Unknown()),
    omop: Type.Optional(Type.Unknown()),
  },
  strict,
);
export type Mapping = Static<typeof MappingBaseSchema> & { file: string };

export class MappingError extends Error {}

export const SNOMED = 'http://snomed.info/sct';

/** The folder of mappings shipped with Setu (`mappings/` at the top of the repository). */
export function shippedMappingsDir(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'mappings');
}

/** `setu:<name>` is a shipped mapping; anything else is a path relative to the site config. */
export function mappingPath(ref: string, configDir: string): string {
  if (ref.startsWith('setu:')) return join(shippedMappingsDir(), `${ref.slice(5)}.yaml`);
  return isAbsolute(ref) ? ref : resolve(configDir, ref);
}

export function parseMapping(text: string, file: string): Mapping {
  let raw: unknown;
  try {
    raw = YAML.parse(text);
  } catch (e) {
    throw new MappingError(`${file}: not valid YAML: ${(e as Error).message}`);
  }
  const problems = checkValue(MappingBaseSchema, raw);
  if (problems.length) throw new MappingError(`${file}: ${problems.join('; ')}`);
  return { ...(raw as Static<typeof MappingBaseSchema>), file };
}

export function loadMapping(ref: string, configDir: string): Mapping {
  const file = mappingPath(ref, configDir);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new MappingError(`cannot read mapping ${ref} (${file}): ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return parseMapping(text, file);
}

/** A source family's own block of the mapping, validated; the error names the field under `/<family>`. */
export function sourceBlock<T extends TSchema>(m: Mapping, family: SourceFamily, schema: T): Static<T> {
  if (m.source !== family) throw new MappingError(`${m.file}: /source: this mapping is for ${m.source} sources, the dataset is ${family}`);
  const problems = checkValue(schema, m[family]);
  if (problems.length) throw new MappingError(`${m.file}: ${problems.map((p) => `/${family}${p === '/' ? '' : p}`).join('; ')}`);
  return m[family] as Static<T>;
}

/** Every code system the mapping's columns and cohort name. */
export function systemsUsed(m: Mapping): Set<string> {
  const out = new Set<string>();
  const add = (codes?: Code[]) => codes?.forEach((c) => c.system && out.add(c.system));
  add(m.cohort.index.codes);
  for (const c of Object.values(m.columns)) {
    if ('ageAt' in c) continue;
    add(c.codes);
    for (const k of Object.keys(c.map ?? {})) if (k.includes('|')) out.add(k.slice(0, k.lastIndexOf('|')));
  }
  return out;
}

/** SNOMED CT is licensed per country and institution: a mapping that uses it needs the site to say it holds a licence. */
export function checkLicences(m: Mapping, licences: readonly string[]): void {
  if (systemsUsed(m).has(SNOMED) && !licences.includes('snomed-ct')) {
    throw new MappingError(`${m.file}: uses SNOMED CT codes (${SNOMED}); the dataset must list "snomed-ct" under licences once this site holds a SNOMED CT licence`);
  }
}
