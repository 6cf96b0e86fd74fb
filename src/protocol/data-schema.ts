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

/** Names of the encoded feature columns, in order: numeric as is, categorical as `name_level` (one-hot). */
export function encodedFeatureNames(s: DataSchema): string[] {
  const out: string[] = [];
  for (const f of s.features) {
    if (f.type === 'numeric') out.push(f.name);
    else f.levels.slice(f.dropFirst ? 1 : 0).forEach((l) => out.push(`${f.name}_${l}`));
  }
  return out;
}


/** One site's column sums for federated normalisation (never rows). */
export const ColumnSumsSchema = Type.Object(
  { n: Type.Integer({ minimum: 0 }), sum: Type.Array(Type.Number(), { maxItems: 100_000 }), sumSq: Type.Array(Type.Number({ minimum: 0 }), { maxItems: 100_000 }) },
  { additionalProperties: false },
);

export const NormStatsSchema = Type.Object({ mean: Type.Array(Type.Number()), std: Type.Array(Type.Number({ minimum: 0 })) }, { additionalProperties: false });

/** A site's answer to a prepare task: every mismatch between its file and the schema, and its sums. */
export const PrepareReportSchema = Type.Object(
  {
    problems: Type.Array(Type.Object({ column: Type.String({ maxLength: 200 }), message: Type.String({ maxLength: 2000 }) }, { additionalProperties: false }), { maxItems: 200 }),
    sums: Type.Optional(ColumnSumsSchema),
  },
  { additionalProperties: false },
);
export type PrepareReport = Static<typeof PrepareReportSchema>;
