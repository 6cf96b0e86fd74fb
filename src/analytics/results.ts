/**
 * The combined results of the queries (what GET /v1/studies/:id/results carries in `result`), as plain types with no
 * imports: the dashboard type-checks against them without pulling in the site side (files, crypto). The modules
 * that compute them re-export them (statistics.ts, survival/km.ts, cox.ts, logrank.ts, query.ts).
 */

export interface PooledCell {
  /** Sum of the released counts (a lower bound when `suppressedAt` is not empty; noisy under DP). */
  count: number;
  /** Sites that suppressed this cell. */
  suppressedAt: string[];
  /** Standard deviation of the DP noise in `count` (0 when exact). */
  noiseSd: number;
}

export interface CountResult {
  kind: 'count';
  by: string[];
  levels: Array<Array<string | null>>;
  /** Row-major over the levels, as the answers. */
  cells: PooledCell[];
  /** Each site's released table (null = suppressed). */
  sites: Record<string, Array<number | null>>;
}

export interface PooledSummary {
  level: string | null;
  n: number;
  mean: number;
  variance: number;
  sd: number;
  /** Pooled min/max of the sites' outward-moved bounds: min ≤ the true minimum, max ≥ the true maximum. */
  min?: number;
  max?: number;
  suppressedAt: string[];
  /** With DP: sd of the noise in n, and an approximate sd of the noise in the mean (delta method). */
  noise?: { n: number; mean: number };
}

export interface SummaryResult {
  kind: 'summary';
  column: string;
  by: string | null;
  groups: PooledSummary[];
  sites: Record<string, Array<{ level: string | null; n: number; mean: number; sd: number } | null>>;
}

export interface HistogramResult {
  kind: 'histogram';
  column: string;
  edges: number[];
  /** below, each bin, above, missing. */
  cells: PooledCell[];
  sites: Record<string, Array<number | null>>;
}

export interface QuantileEstimate {
  prob: number;
  /** Read off the pooled histogram by linear interpolation within the bin holding rank p·N. */
  estimate: number;
  /**
   * Bin edges (±Infinity outside the range) holding the order statistics of ranks ⌊pN⌋ to ⌊pN⌋ + 2, so every usual
   * sample quantile of the pooled rows (R's types 1–9, numpy's methods) lies in [lower, upper], whatever was suppressed.
   */
  lower: number;
  upper: number;
}

export interface QuantilesResult {
  kind: 'quantiles';
  column: string;
  /** Non-missing rows over all sites that released their total. */
  n: number;
  quantiles: QuantileEstimate[];
  /** Sites whose histogram had suppressed cells (their mass is spread over those cells, widening the bounds). */
  incompleteAt: string[];
}

export interface MissingnessResult {
  kind: 'missingness';
  columns: Array<{ column: string; missing: PooledCell; present: PooledCell; /** missing / (missing + present) over the sites that released both. */ fraction: number }>;
}

export interface KmCurve {
  time: number[];
  nRisk: number[];
  nEvent: number[];
  nCensor: number[];
  surv: number[];
  /** Greenwood standard error of log S(t) (NaN/Infinity where S reaches 0, as in R). */
  stdErr: number[];
  /** NaN where R gives NA. */
  lower: number[];
  upper: number[];
  /** Subjects at the start. */
  n: number;
  events: number;
  median: { estimate: number; lower: number; upper: number };
  confLevel: number;
  confType: 'log' | 'log-log' | 'plain';
  /** The curve is the pooled curve of the sites' data up to here (Infinity: everywhere). */
  exactUntil: number;
}

export type Ties = 'breslow' | 'efron';

export interface CoxResult {
  kind: 'cox';
  names: string[];
  coef: number[];
  se: number[];
  z: number[];
  p: number[];
  hazardRatio: number[];
  lower: number[];
  upper: number[];
  confLevel: number;
  /** p × p covariance of the coefficients, row-major. */
  variance: number[];
  /** ℓ(0) and ℓ(β̂). */
  loglik: [number, number];
  likelihoodRatio: { statistic: number; df: number; p: number };
  wald: { statistic: number; df: number; p: number };
  score: { statistic: number; df: number; p: number };
  n: number;
  events: number;
  iterations: number;
  converged: boolean;
  ties: Ties;
  strata: 'site' | 'none';
  /** Sites that sat the fit out (fewer complete rows than their minimum). */
  excludedSites: string[];
  /** Sites whose risk sets stopped at their minimum (strata none): their last subjects count as censored there. */
  truncatedSites: string[];
}

export interface LogRankResult {
  levels: string[];
  /** Subjects per group. */
  n: number[];
  observed: number[];
  expected: number[];
  /** G × G, row-major. */
  variance: number[];
  chisq: number;
  df: number;
  p: number;
  /** Time up to which every stratum's tables are exact (Infinity: everywhere). */
  exactUntil: number;
}

export interface KmResult {
  kind: 'kaplan-meier';
  by: string | null;
  levels: string[];
  /** All subjects (of every level when `by` is set). */
  overall: KmCurve;
  /** One pooled curve per level (empty without `by`). */
  groups: KmCurve[];
  /** Each site's own curves: overall, then per level (null where it released no table). */
  sites: Record<string, { overall: KmCurve | null; groups: Array<KmCurve | null> }>;
}

export interface LogRankQueryResult extends LogRankResult {
  kind: 'log-rank';
  group: string;
  strata: 'none' | 'site';
}

export type QueryResult = CountResult | SummaryResult | HistogramResult | QuantilesResult | MissingnessResult | KmResult | LogRankQueryResult | CoxResult;
