/**
 * A study's data schema as it travels: which CSV columns are features and how they are encoded,
 * the task (binary label or survival time/event), preprocessing and the train/test split.
 * The site layer (src/site/data/schema.ts) validates it further and checks files against it.
 */
import { Type, type Static } from '@sinclair/typebox';

const Name = Type.String({ minLength: 1 });

export const NumericColumn = Type.Object({ name: Name, type: Type.Literal('numeric') }, { additionalProperties: false });
export const CategoricalColumn = Type.Object(
  {
    name: Name,
    type: Type.Literal('categorical'),
    /** Every value the column may hold, as written in the CSV; one-hot columns follow this order. */
    levels: Type.Array(Type.String(), { minItems: 1 }),
    /** Drop the first level's indicator (the reference level), as FLamby and pandas' drop_first do. */
    dropFirst: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
export const FeatureColumn = Type.Union([NumericColumn, CategoricalColumn]);

export const BinaryTask = Type.Object(
  {
    kind: Type.Literal('binary'),
    label: Name,
    /** Which raw values are positive. Absent: the label must already be 0 or 1. */
    positive: Type.Optional(
      Type.Union([
        Type.Object({ equals: Type.Array(Type.String(), { minItems: 1 }) }, { additionalProperties: false }),
        Type.Object({ above: Type.Number() }, { additionalProperties: false }),
      ]),
    ),
  },
  { additionalProperties: false },
);
export const SurvivalTask = Type.Object(
  {
    kind: Type.Literal('survival'),
    /** Follow-up time, a non-negative number. */
    time: Name,
    /** 1 = event observed, 0 = censored. */
    event: Name,
  },
  { additionalProperties: false },
);

export const Preprocessing = Type.Object(
  {
    /** 'site': each site's own training statistics; 'global': federated statistics from sites' sums. */
    normalise: Type.Union([Type.Literal('site'), Type.Literal('global'), Type.Literal('none')]),
    /** Which columns are normalised: numeric features only (default) or every column, one-hot included (FLamby's heart). */
    scope: Type.Optional(Type.Union([Type.Literal('numeric'), Type.Literal('all')])),
    /** Added to the std before dividing, so a constant column stays finite (default 1e-9, as FLamby). */
    epsilon: Type.Optional(Type.Number({ minimum: 0 })),
    /** Rows with a missing value in a used column: dropped (default) or an error. */
    missing: Type.Optional(Type.Union([Type.Literal('drop'), Type.Literal('error')])),
    /**
     * 'float32': statistics rounded to float32 and every step of x' = (x − mean) / (std + ε) rounded to float32, as a
     * PyTorch float32 pipeline computes it (FLamby's heart loader); 'float64' (default): computed in float64, stored as float32.
     */
    arithmetic: Type.Optional(Type.Union([Type.Literal('float64'), Type.Literal('float32')])),
  },
  { additionalProperties: false },
);

export const Split = Type.Union([
  Type.Object(
    {
      kind: Type.Literal('stratified'),
      /** Fraction of each class (binary label or survival event) that goes to training. */
      trainFraction: Type.Number({ exclusiveMinimum: 0, exclusiveMaximum: 1 }),
      seed: Type.Integer(),
    },
    { additionalProperties: false },
  ),
  Type.Object(
    {
      kind: Type.Literal('column'),
      column: Name,
      train: Type.Optional(Type.String()),
      test: Type.Optional(Type.String()),
    },
    { additionalProperties: false },
  ),
]);

export const DataSchemaT = Type.Object(
  {
    features: Type.Array(FeatureColumn, { minItems: 1 }),
    task: Type.Union([BinaryTask, SurvivalTask]),
    preprocessing: Type.Optional(Preprocessing),
    split: Split,
  },
  { additionalProperties: false },
);

export type DataSchema = Static<typeof DataSchemaT>;
export type FeatureColumnSpec = Static<typeof FeatureColumn>;


/** One site's column sums for federated normalisation (never rows). */
export const ColumnSumsSchema = Type.Object(
  { n: Type.Integer({ minimum: 0 }), sum: Type.Array(Type.Number(), { maxItems: 100_000 }), sumSq: Type.Array(Type.Number({ minimum: 0 }), { maxItems: 100_000 }) },
  { additionalProperties: false },
);

export const NormStatsSchema = Type.Object({ mean: Type.Array(Type.Number()), std: Type.Array(Type.Number({ minimum: 0 })) }, { additionalProperties: false });

/**
 * Why a site left a row, a value or a source record out of its table. Fixed words, no free text: the counts tell the
 * study lead how much each site lost and why, and nothing else about the site's source (details stay in its own log).
 */
export const DROP_REASONS = [
  'missing-value', // no value for a column the schema uses
  'unmapped-code', // a coded value outside the mapping
  'unit-not-convertible', // a unit that cannot be converted to the column's unit
  'conflicting-values', // two different values where the mapping wants one
  'invalid-value', // a value that is not what the column needs (a date that is not a date, …)
  'malformed-record', // a line or record that does not parse (NDJSON line, HL7 message, database row)
  'not-a-document', // a Bundle in a document folder whose type is not 'document'
  'unknown-profile', // a resource claiming no profile the mapping accepts
  'broken-segment', // an HL7 segment that does not parse
  'missing-table', // an OMOP table the mapping needs is absent
  'no-patient', // a record whose patient the source does not hold
] as const;
export type DropReason = (typeof DROP_REASONS)[number];
const Reason = Type.Union(DROP_REASONS.map((r) => Type.Literal(r)));
const Count = Type.Integer({ minimum: 0 });

/** A site's counts of what its table holds and what was left out, by reason (src/datasources; CSV files too). */
export const ExtractionReportSchema = Type.Object(
  {
    /** Rows of the site's table (one per patient in the cohort for an extracted source). */
    rows: Count,
    /** Rows with a value in every column the schema uses (training and test). */
    kept: Count,
    /** Rows left out, by the reason for their first missing used column. */
    dropped: Type.Array(Type.Object({ reason: Reason, column: Type.String({ maxLength: 200 }), count: Count }, { additionalProperties: false }), { maxItems: 200 }),
    /** Source records and values the extraction left out, by reason (each one is in the site's log with file/line/resource id). */
    skipped: Type.Array(Type.Object({ reason: Reason, count: Count }, { additionalProperties: false }), { maxItems: DROP_REASONS.length }),
  },
  { additionalProperties: false },
);
export type ExtractionReport = Static<typeof ExtractionReportSchema>;

/** A site's answer to a prepare task: every mismatch between its file and the schema, and its sums. */
export const PrepareReportSchema = Type.Object(
  {
    problems: Type.Array(Type.Object({ column: Type.String({ maxLength: 200 }), message: Type.String({ maxLength: 2000 }) }, { additionalProperties: false }), { maxItems: 200 }),
    sums: Type.Optional(ColumnSumsSchema),
    /** What the site's table holds and what was left out (counts by reason only). */
    extraction: Type.Optional(ExtractionReportSchema),
  },
  { additionalProperties: false },
);
export type PrepareReport = Static<typeof PrepareReportSchema>;
