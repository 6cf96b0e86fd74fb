/**
 * What leaves a site: one answer message per query, as TypeBox schemas (the coordinator validates
 * what arrives with them) whose static types carry `ReleasedCount` for every count, so that a site
 * cannot build an answer holding a count that did not pass suppression.
 *
 * Every answer states the site's own `minCellCount` (and whether it also hides zeros), so the
 * coordinator can check each count against it (`checkAnswer`) and can say, for a suppressed cell,
 * how large it might have been.
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { checkReleased, type ReleasedCount } from './release.js';

const strict = { additionalProperties: false } as const;
/** A count that passed suppression (TypeBox cannot express the brand; `checkAnswer` enforces the rule at runtime). */
const Released = Type.Unsafe<ReleasedCount>(Type.Number({ minimum: 0 }));
const MaybeCount = Type.Union([Released, Type.Null()]);
const Level = Type.Union([Type.String(), Type.Null()]);
const Guard = { minCellCount: Type.Integer({ minimum: 1 }), suppressZeros: Type.Boolean() };

export const NoiseInfoSchema = Type.Object(
  { mechanism: Type.Union([Type.Literal('laplace'), Type.Literal('gaussian')]), sd: Type.Array(Type.Number({ minimum: 0 })) },
  strict,
);

export const CountAnswerSchema = Type.Object(
  {
    kind: Type.Literal('count'),
    ...Guard,
    by: Type.Array(Type.String()),
    /** Per by-column: its levels, then null (the missing value). */
    levels: Type.Array(Type.Array(Level)),
    /** Row-major over the levels; null = suppressed. The overall count (no by-columns) is one cell. */
    counts: Type.Array(MaybeCount),
    noise: Type.Optional(NoiseInfoSchema),
  },
  strict,
);

export const SummaryGroupSchema = Type.Union([
  /** Exact: n, mean and the sum of squared deviations m2 (min/max moved outward by the site's noise). */
  Type.Object({ n: Released, mean: Type.Number(), m2: Type.Number({ minimum: 0 }), min: Type.Optional(Type.Number()), max: Type.Optional(Type.Number()) }, strict),
  /** DP: noisy n, noisy clamped Σx and (for variance/sd) Σx². */
  Type.Object({ n: Released, sum: Type.Number(), sumSq: Type.Optional(Type.Number()) }, strict),
]);

export const SummaryAnswerSchema = Type.Object(
  {
    kind: Type.Literal('summary'),
    ...Guard,
    column: Type.String(),
    by: Type.Union([Type.String(), Type.Null()]),
    levels: Type.Array(Level),
    groups: Type.Array(Type.Union([SummaryGroupSchema, Type.Null()])),
    /** With DP: sd of the noise on n, Σx, Σx² (in that order). */
    noise: Type.Optional(NoiseInfoSchema),
    /** min/max: the fractions of the site's sd by which they were moved outward were drawn from [low, high]. */
    minMaxNoise: Type.Optional(Type.Tuple([Type.Number(), Type.Number()])),
  },
  strict,
);

export const HistogramAnswerSchema = Type.Object(
  {
    kind: Type.Literal('histogram'),
    ...Guard,
    column: Type.String(),
    edges: Type.Array(Type.Number(), { minItems: 2 }),
    /** below range, each bin, at/above range, missing; null = suppressed. */
    counts: Type.Array(MaybeCount),
    /** Rows in total (all four kinds of cell), so the coordinator knows the suppressed mass. */
    total: MaybeCount,
    noise: Type.Optional(NoiseInfoSchema),
  },
  strict,
);

export const MissingnessAnswerSchema = Type.Object(
  {
    kind: Type.Literal('missingness'),
    ...Guard,
    columns: Type.Array(Type.Object({ column: Type.String(), missing: MaybeCount, present: MaybeCount }, strict)),
    noise: Type.Optional(NoiseInfoSchema),
  },
  strict,
);

export type CountAnswer = Static<typeof CountAnswerSchema>;
export type SummaryAnswer = Static<typeof SummaryAnswerSchema>;
export type SummaryGroup = Static<typeof SummaryGroupSchema>;
export type HistogramAnswer = Static<typeof HistogramAnswerSchema>;
export type MissingnessAnswer = Static<typeof MissingnessAnswerSchema>;

/** Validates an arriving answer against its schema; returns the problems (empty when clean). */
export function schemaProblems(schema: TSchema, value: unknown): string[] {
  if (Value.Check(schema, value)) return [];
  return [...new Set([...Value.Errors(schema, value)].slice(0, 10).map((e) => `${e.path || '/'}: ${e.message}`))];
}

/** The count-rule check for the statistics answers (survival answers check their risk sets in their own modules). */
export function statisticsCountProblems(a: CountAnswer | SummaryAnswer | HistogramAnswer | MissingnessAnswer): string[] {
  const opts = { zerosAllowed: !a.suppressZeros, noisy: a.noise !== undefined };
  switch (a.kind) {
    case 'count':
      return checkReleased(a.counts, a.minCellCount, 'counts', opts);
    case 'summary':
      // A group's n is released like a cell.
      return checkReleased(a.groups.map((g) => g?.n ?? null), a.minCellCount, 'groups.n', opts);
    case 'histogram':
      return [...checkReleased(a.counts, a.minCellCount, 'counts', opts), ...checkReleased([a.total], a.minCellCount, 'total', opts)];
    case 'missingness':
      return a.columns.flatMap((c) => checkReleased([c.missing, c.present], a.minCellCount, `columns[${c.column}]`, opts));
  }
}
