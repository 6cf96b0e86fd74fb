/**
 * What an analytics study asks (queries), what a site allows (its policy), as TypeBox schemas: the
 * schemas are the documentation, and `parseQuery` / `parsePolicy` name the field at fault.
 *
 * Columns are named as in the study's data schema (its features, and for survival queries the
 * task's time and event columns). A query never names a column the data schema does not declare,
 * so every site checks the same types.
 *
 *   queries:
 *     - { kind: count }                                   # overall count
 *     - { kind: count, by: [sex] }                        # by category
 *     - { kind: count, by: [sex, cp] }                    # cross-tabulation
 *     - { kind: summary, column: age, statistics: [mean, sd, min, max], by: sex }
 *     - { kind: histogram, column: chol, range: [100, 600], bins: 25 }
 *     - { kind: quantiles, column: age, probs: [0.25, 0.5, 0.75], range: [20, 90], bins: 140 }
 *     - { kind: missingness }                             # every column of the data schema
 *     - { kind: kaplan-meier, by: sex }                   # Greenwood CIs, median survival
 *     - { kind: log-rank, group: sex, strata: site }
 *     - { kind: cox, covariates: [age, sex, ph.ecog], ties: efron, strata: site }
 */
import { Type, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { encodedFeatureNames, type DataSchema } from './data-schema.js';

const strict = { additionalProperties: false } as const;
const Column = Type.String({ minLength: 1, maxLength: 200 });
const Range = Type.Tuple([Type.Number(), Type.Number()]);

export const CountQuery = Type.Object(
  {
    kind: Type.Literal('count'),
    /** Categorical columns: none gives the overall count, one a count by category, two or more a cross-tabulation. */
    by: Type.Optional(Type.Array(Column, { maxItems: 4, uniqueItems: true })),
  },
  strict,
);

export const SummaryStatistic = Type.Union([Type.Literal('mean'), Type.Literal('variance'), Type.Literal('sd'), Type.Literal('min'), Type.Literal('max')]);

export const SummaryQuery = Type.Object(
  {
    kind: Type.Literal('summary'),
    /** A numeric column. */
    column: Column,
    /** Default: mean, variance, sd. min and max are released only with outward noise (see the site policy). */
    statistics: Type.Optional(Type.Array(SummaryStatistic, { minItems: 1, uniqueItems: true })),
    /** A categorical column: one summary per level. */
    by: Type.Optional(Column),
    /** Values are clamped to [lower, upper]. Required when a site adds DP noise: the bounds set the noise's sensitivity. */
    bounds: Type.Optional(Range),
  },
  strict,
);

const Bins = Type.Integer({ minimum: 1, maximum: 10_000 });

export const HistogramQuery = Type.Object(
  {
    kind: Type.Literal('histogram'),
    column: Column,
    /** [lo, hi): equal-width bins; values below lo or at/above hi are counted in `below` and `above`. */
    range: Range,
    bins: Bins,
  },
  strict,
);

export const QuantilesQuery = Type.Object(
  {
    kind: Type.Literal('quantiles'),
    column: Column,
    probs: Type.Array(Type.Number({ exclusiveMinimum: 0, exclusiveMaximum: 1 }), { minItems: 1, maxItems: 100 }),
    /** Quantiles are read off a federated histogram over range with this many bins: their resolution is one bin. */
    range: Range,
    bins: Bins,
  },
  strict,
);

export const MissingnessQuery = Type.Object(
  {
    kind: Type.Literal('missingness'),
    /** Default: every column the data schema names. */
    columns: Type.Optional(Type.Array(Column, { minItems: 1, maxItems: 1000, uniqueItems: true })),
  },
  strict,
);

export const ConfType = Type.Union([Type.Literal('log'), Type.Literal('log-log'), Type.Literal('plain')]);
/** Rounds every time up to a multiple of this (e.g. 7 for weeks) before anything is counted: fewer distinct times leave the site. */
const TimeResolution = Type.Number({ exclusiveMinimum: 0 });

export const KaplanMeierQuery = Type.Object(
  {
    kind: Type.Literal('kaplan-meier'),
    /** A categorical column: one curve per level (and always the overall curve). */
    by: Type.Optional(Column),
    /** Confidence level of the Greenwood intervals (default 0.95). */
    confLevel: Type.Optional(Type.Number({ exclusiveMinimum: 0, exclusiveMaximum: 1 })),
    /** Transform of the interval, as R's survfit conf.type (default 'log'). */
    confType: Type.Optional(ConfType),
    timeResolution: Type.Optional(TimeResolution),
  },
  strict,
);

export const LogRankQuery = Type.Object(
  {
    kind: Type.Literal('log-rank'),
    /** A categorical column: the groups compared. */
    group: Column,
    /** 'site': the stratified test, each site its own stratum (as survdiff(… + strata(site))). Default 'none'. */
    strata: Type.Optional(Type.Union([Type.Literal('none'), Type.Literal('site')])),
    timeResolution: Type.Optional(TimeResolution),
  },
  strict,
);

export const CoxQuery = Type.Object(
  {
    kind: Type.Literal('cox'),
    /** Numeric columns enter as they are; categorical ones as indicators of every level but the first (the reference). */
    covariates: Type.Array(Column, { minItems: 1, maxItems: 50, uniqueItems: true }),
    /** Handling of tied event times (default 'efron', as R's coxph). */
    ties: Type.Optional(Type.Union([Type.Literal('breslow'), Type.Literal('efron')])),
    /** 'site': one baseline hazard per site, the usual multi-centre model; 'none': one shared baseline. Default 'site'. */
    strata: Type.Optional(Type.Union([Type.Literal('none'), Type.Literal('site')])),
    confLevel: Type.Optional(Type.Number({ exclusiveMinimum: 0, exclusiveMaximum: 1 })),
    /** Newton–Raphson stops when |1 − ℓ_old/ℓ_new| ≤ tolerance (default 1e-9, R's coxph eps) or after maxIterations (default 20). */
    tolerance: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 1e-3 })),
    maxIterations: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
    timeResolution: Type.Optional(TimeResolution),
  },
  strict,
);

export const QuerySpecSchema = Type.Union([CountQuery, SummaryQuery, HistogramQuery, QuantilesQuery, MissingnessQuery, KaplanMeierQuery, LogRankQuery, CoxQuery]);
export type QuerySpec = Static<typeof QuerySpecSchema>;
export type QueryKind = QuerySpec['kind'];
export const QUERY_KINDS: readonly QueryKind[] = ['count', 'summary', 'histogram', 'quantiles', 'missingness', 'kaplan-meier', 'log-rank', 'cox'];
export type CountQuery = Static<typeof CountQuery>;
export type SummaryQuery = Static<typeof SummaryQuery>;
export type HistogramQuery = Static<typeof HistogramQuery>;
export type QuantilesQuery = Static<typeof QuantilesQuery>;
export type MissingnessQuery = Static<typeof MissingnessQuery>;
export type KaplanMeierQuery = Static<typeof KaplanMeierQuery>;
export type LogRankQuery = Static<typeof LogRankQuery>;
export type CoxQuery = Static<typeof CoxQuery>;

/**
 * The analytics block of a study, independent of StudySpec (wave 2 adds it there as `analytics`):
 * named queries, run in order, each answered by every site.
 */
export const AnalyticsSpecSchema = Type.Object(
  {
    // Each query kind with an optional name (an intersection would let every strict member refuse `name`).
    queries: Type.Array(
      Type.Union(QuerySpecSchema.anyOf.map((m) => Type.Object({ name: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })), ...m.properties }, strict))),
      { minItems: 1, maxItems: 100 },
    ),
  },
  strict,
);
export type AnalyticsSpec = { queries: Array<QuerySpec & { name?: string }> };

/**
 * A site's own analytics policy (its site.yaml `analytics:` block in wave 2). It overrides the study: a
 * query it does not allow is refused, a cell below its minimum never leaves, and when it asks for DP
 * noise every released number carries noise charged to its budget.
 */
export const AnalyticsPolicySchema = Type.Object(
  {
    /** Counts from 1 to minCellCount − 1 are suppressed, and so are the risk sets of survival queries below it. */
    minCellCount: Type.Integer({ minimum: 1, maximum: 1_000_000 }),
    /** Also suppress counts of 0 (a zero says nobody at this site has the value: an attribute disclosure for everyone). */
    suppressZeros: Type.Optional(Type.Boolean()),
    /** Query kinds this site answers (default: all). */
    allow: Type.Optional(Type.Array(Type.Union(QUERY_KINDS.map((k) => Type.Literal(k))), { uniqueItems: true })),
    /** Noise this site adds to every count and sum it releases, at ε per query (and δ for Gaussian), charged to its budget. */
    dp: Type.Optional(
      Type.Object(
        {
          mechanism: Type.Union([Type.Literal('laplace'), Type.Literal('gaussian')]),
          epsilon: Type.Number({ exclusiveMinimum: 0, maximum: 100 }),
          delta: Type.Optional(Type.Number({ exclusiveMinimum: 0, exclusiveMaximum: 1 })),
        },
        strict,
      ),
    ),
    /**
     * Allow a Cox model with one shared baseline (strata: none): it needs this site's risk-set sums at every one of its
     * follow-up times, whose differences reveal the covariates of a subject who leaves the risk set alone. Default false.
     */
    allowRiskSetSums: Type.Optional(Type.Boolean()),
    /** min/max are moved outward by a uniform random fraction in [low, high] of the site's standard deviation (default [0.1, 0.3]). */
    minMaxNoise: Type.Optional(Type.Tuple([Type.Number({ minimum: 0 }), Type.Number({ exclusiveMinimum: 0 })])),
  },
  strict,
);
export type AnalyticsPolicy = Static<typeof AnalyticsPolicySchema>;

function check<T>(schema: Parameters<typeof Value.Check>[0], what: string, input: unknown): T {
  if (!Value.Check(schema, input)) {
    const errs = [...new Set([...Value.Errors(schema, input)].slice(0, 8).map((e) => `${e.path || '/'}: ${e.message}`))].slice(0, 4);
    throw new Error(`invalid ${what}: ${errs.join('; ')}`);
  }
  return input as T;
}

/** Validates one query from a study file; the error names the field and what is allowed. */
export function parseQuery(input: unknown): QuerySpec {
  const kind = (input as { kind?: unknown } | null)?.kind;
  if (typeof kind !== 'string' || !(QUERY_KINDS as readonly string[]).includes(kind)) {
    throw new Error(`invalid query: /kind: ${JSON.stringify(kind)} is not one of ${QUERY_KINDS.join(', ')}`);
  }
  // Check against the one member, so the errors speak of that kind's fields only.
  const member = QuerySpecSchema.anyOf[QUERY_KINDS.indexOf(kind as QueryKind)]!;
  const q = check<QuerySpec>(member, `${kind} query`, input);
  if ('range' in q && !(q.range[0] < q.range[1])) throw new Error(`invalid ${kind} query: /range: lower end ${q.range[0]} must be below upper end ${q.range[1]}`);
  if (q.kind === 'summary' && q.bounds && !(q.bounds[0] < q.bounds[1])) throw new Error(`invalid summary query: /bounds: lower ${q.bounds[0]} must be below upper ${q.bounds[1]}`);
  return q;
}

export function parseAnalyticsSpec(input: unknown): AnalyticsSpec {
  const o = input as { queries?: unknown } | null;
  if (!o || typeof o !== 'object' || !Array.isArray(o.queries) || o.queries.length === 0) throw new Error('invalid analytics: /queries: a non-empty list of queries is required');
  const extra = Object.keys(o).filter((k) => k !== 'queries');
  if (extra.length) throw new Error(`invalid analytics: unknown field ${extra.map((k) => `/${k}`).join(', ')} (allowed: queries)`);
  return {
    queries: o.queries.map((raw, i) => {
      const { name, ...rest } = (raw ?? {}) as { name?: unknown };
      if (name !== undefined && (typeof name !== 'string' || name.length === 0 || name.length > 100)) throw new Error(`invalid analytics: /queries/${i}/name: a non-empty string of at most 100 characters`);
      try {
        return { ...parseQuery(rest), ...(name !== undefined ? { name: name as string } : {}) };
      } catch (e) {
        throw new Error(`/queries/${i}: ${(e as Error).message}`);
      }
    }),
  };
}

export function parsePolicy(input: unknown): AnalyticsPolicy {
  const p = check<AnalyticsPolicy>(AnalyticsPolicySchema, 'analytics policy', input);
  if (p.dp?.mechanism === 'gaussian' && p.dp.delta === undefined) throw new Error('invalid analytics policy: /dp/delta: the Gaussian mechanism needs a δ');
  if (p.minMaxNoise && !(p.minMaxNoise[0] <= p.minMaxNoise[1])) throw new Error('invalid analytics policy: /minMaxNoise: low must not exceed high');
  return p;
}

// ---- on the wire: the analytics task, the site's answer, the committed results ----

/**
 * What an analytics task carries (TaskMessage.analytics): the query of this round and, for a Cox fit, the β at which
 * the site evaluates its sums (absent in the first round: β = 0).
 */
export const AnalyticsTaskSchema = Type.Object(
  {
    /** Position of the query in the study's `analytics.queries`. */
    index: Type.Integer({ minimum: 0 }),
    name: Type.Optional(Type.String()),
    query: QuerySpecSchema,
    beta: Type.Optional(Type.Array(Type.Number(), { maxItems: 10_000 })),
  },
  strict,
);
export type AnalyticsTask = Static<typeof AnalyticsTaskSchema>;

/**
 * The site's answer in its result (ResultMeta.analytics). `answer` is exactly what the site's `answerQuery` returned
 * (counts typed `ReleasedCount | null`: suppressed cells are null, never a number); the coordinator checks it with
 * `answerProblems` (the answer's schema, and every count against the `minCellCount` the answer states) and refuses
 * it, changing nothing, on any problem.
 */
export const AnalyticsResultSchema = Type.Object({ answer: Type.Unknown() }, strict);
export type AnalyticsResult = Static<typeof AnalyticsResultSchema>;

/** One query's entry in GET /v1/studies/:id/results. */
export const QueryResultEntrySchema = Type.Object(
  {
    index: Type.Integer(),
    name: Type.Optional(Type.String()),
    kind: Type.String(),
    /** pending: not reached yet; running: its round(s) are open; done: combined and committed; failed: no site answered. */
    status: Type.Union([Type.Literal('pending'), Type.Literal('running'), Type.Literal('done'), Type.Literal('failed')]),
    /** The rounds that answered it (a Cox fit: one per Newton step). */
    rounds: Type.Array(Type.Integer()),
    /** The combined result (analytics/query.ts QueryResult), when done. */
    result: Type.Optional(Type.Unknown()),
    /** Sites (by name) that refused the query, with the reason they gave. */
    refusals: Type.Record(Type.String(), Type.String()),
    /** sha256 of the canonical JSON of the result, as in its audit entry (analytics.committed). */
    digest: Type.Optional(Type.String()),
    error: Type.Optional(Type.String()),
  },
  { additionalProperties: false },
);
export type QueryResultEntry = Static<typeof QueryResultEntrySchema>;

export const StudyResultsSchema = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    status: Type.String(),
    queries: Type.Array(QueryResultEntrySchema),
  },
  { additionalProperties: false },
);
export type StudyResults = Static<typeof StudyResultsSchema>;

/**
 * An analytics study needs no model: a study file with `analytics:` and a `dataSchema` but without `model`, `strategy`,
 * `rounds` and `fit` (the same file `setu analytics run` reads) gets the training fields filled with values nothing
 * uses, so it is one StudySpec to the rest of the system: a model of the schema's width (what the study checks compare
 * against the data), one round, and one epoch (an answer covers the site's whole table, which is what the
 * jurisdiction policy's examples-per-update rule then sees). Anything else is returned as it is.
 */
export function analyticsStudyDefaults(body: unknown): unknown {
  if (!body || typeof body !== 'object' || Array.isArray(body)) return body;
  const o = body as Record<string, unknown>;
  if (!('analytics' in o) || ['model', 'strategy', 'rounds', 'fit'].some((k) => k in o)) return body;
  const schema = o.dataSchema as DataSchema | undefined;
  let width: number;
  try {
    width = encodedFeatureNames(schema!).length;
  } catch {
    return body; // no or no valid data schema: validation names the fields
  }
  return {
    ...o,
    model: schema!.task.kind === 'survival' ? { kind: 'cox', inputDim: Math.max(1, width) } : { kind: 'logistic', inputDim: Math.max(1, width) },
    strategy: { name: 'FedAvg' },
    rounds: 1,
    fit: { epochs: 1, batchSize: 32, optimizer: { kind: 'sgd', lr: 0.01 } },
  };
}
