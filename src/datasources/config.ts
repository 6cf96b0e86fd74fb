/**
 * The site-config entries (site.yaml `datasets:`) for sources other than a CSV file. Each names its
 * source and a mapping (`setu:<name>` for one shipped in mappings/, or a path beside the config).
 *
 *   heart:
 *     format: fhir
 *     source: { kind: ndjson, dir: export/ }        # or { kind: bundles, dir } or { kind: server, url, mode: search|bulk, auth }
 *     mapping: setu:heart-fhir-nrces
 *   heart:
 *     format: omop
 *     database: { sqlite: omop.db }                  # or { postgres: postgres://…, schema: cdm }
 *     mapping: setu:heart-omop
 *     enrolment: { file: enrolment.csv, patient: person_id }
 */
import { Type, type Static } from '@sinclair/typebox';

const strict = { additionalProperties: false } as const;
const Path = Type.String({ minLength: 1 });

const Common = {
  /** The mapping from this source to the study's columns. */
  mapping: Path,
  /** Terminologies this site holds a licence for; a mapping using SNOMED CT needs `snomed-ct`. */
  licences: Type.Optional(Type.Array(Type.Literal('snomed-ct'))),
  /**
   * A site-local enrolment list (CSV): one row per enrolled patient, keyed by the source's patient id in
   * column `patient`; every other column becomes a fact of kind `enrolment` (its code is the column name),
   * e.g. the study arm or the train/test assignment.
   */
  enrolment: Type.Optional(Type.Object({ file: Path, patient: Type.String({ minLength: 1 }) }, strict)),
};

export const SmartAuthSchema = Type.Object(
  {
    clientId: Type.String({ minLength: 1 }),
    privateKeyFile: Path,
    alg: Type.Union([Type.Literal('RS384'), Type.Literal('ES384')]),
    kid: Type.Optional(Type.String({ minLength: 1 })),
    scope: Type.Optional(Type.String({ minLength: 1 })),
    tokenUrl: Type.Optional(Type.String({ pattern: '^https?://' })),
  },
  strict,
);

export const FhirSourceSchema = Type.Union([
  Type.Object({ kind: Type.Literal('ndjson'), dir: Path }, strict),
  Type.Object({ kind: Type.Literal('bundles'), dir: Path }, strict),
  Type.Object(
    {
      kind: Type.Literal('server'),
      url: Type.String({ pattern: '^https?://' }),
      mode: Type.Union([Type.Literal('search'), Type.Literal('bulk')]),
      pageSize: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
      timeoutSeconds: Type.Optional(Type.Integer({ minimum: 1 })),
      auth: Type.Optional(SmartAuthSchema),
    },
    strict,
  ),
]);

export const FhirDatasetSchema = Type.Object({ format: Type.Literal('fhir'), source: FhirSourceSchema, ...Common }, strict);
export const OmopDatasetSchema = Type.Object(
  {
    format: Type.Literal('omop'),
    database: Type.Union([
      Type.Object({ sqlite: Path }, strict),
      Type.Object({ postgres: Type.String({ pattern: '^postgres(ql)?://' }), schema: Type.Optional(Type.String({ pattern: '^[a-z_][a-z0-9_]*$' })) }, strict),
    ]),
    ...Common,
  },
  strict,
);
export const ExtractedDatasetSchemas = [FhirDatasetSchema, OmopDatasetSchema] as const;
export type FhirDataset = Static<typeof FhirDatasetSchema>;
export type OmopDataset = Static<typeof OmopDatasetSchema>;
export type ExtractedDataset = FhirDataset | OmopDataset;
export const EXTRACTED_FORMATS: ReadonlyArray<ExtractedDataset['format']> = ['fhir', 'omop'];
