/**
 * Descriptive statistics: each query's site side (the site's table and policy in, exactly the answer
 * that leaves the site out) and coordinator side (the sites' answers in, the pooled result out).
 *
 * Exact answers combine to the pooled computation: counts add; means and variances combine by Chan's
 * parallel formula from (n, mean, m2), so the pooled variance keeps full float64 precision; histograms
 * add. Suppressed cells are left out and every pooled figure says which sites it lacks. With DP, the
 * noisy figures add, and the result states the standard deviation of the noise it carries.
 */
import type { CountAnswer, HistogramAnswer, MissingnessAnswer, SummaryAnswer, SummaryGroup } from './answers.js';
import type { SiteTable } from './columns.js';
import { QueryRefused } from './columns.js';
import { DpRelease, type DpContext, type NoiseSource } from './dp.js';
import { releaseCount, suppressTable, type ReleasedCount } from './release.js';
import type { AnalyticsPolicy, CountQuery, HistogramQuery, MissingnessQuery, QuantilesQuery, SummaryQuery } from './spec.js';
import type { PrivacySpend } from '../protocol/api.js';
import type { PooledCell, CountResult, PooledSummary, SummaryResult, HistogramResult, QuantileEstimate, QuantilesResult, MissingnessResult } from './results.js';
export type { PooledCell, CountResult, PooledSummary, SummaryResult, HistogramResult, QuantileEstimate, QuantilesResult, MissingnessResult } from './results.js';

export interface SiteInput {
  table: SiteTable;
  policy: AnalyticsPolicy;
  noise: NoiseSource;
  dp?: DpContext;
  /** Label for the privacy account's history (e.g. the task id). */
  label?: string;
}
export interface Answered<A> {
  answer: A;
  spend?: PrivacySpend;
}
const guard = (p: AnalyticsPolicy) => ({ minCellCount: p.minCellCount, suppressZeros: !!p.suppressZeros });

/** Noisy counts (when DP) of a table, then suppression. */
function releaseTable(counts: number[], shape: number[], input: SiteInput, label: string): { counts: Array<ReleasedCount | null>; values: number[]; dp?: DpRelease; spend?: PrivacySpend } {
  if (!input.policy.dp) return { counts: suppressTable(counts, shape, input.policy), values: counts };
  const dp = DpRelease.plan(input.policy, input.dp, [1]);
  const noisy = counts.map((c) => dp.add(c, 0, input.noise));
  const spend = dp.spend(input.dp!, label);
  return { counts: suppressTable(noisy, shape, input.policy), values: noisy, dp, spend };
}

// ---- count ---------------------------------------------------------------------------------------------------

export function siteCount(q: CountQuery, input: SiteInput): Answered<CountAnswer> {
  const by = q.by ?? [];
  const cols = by.map((c) => input.table.categorical(c, 'by-column'));
  const shape = cols.map((c) => c.levels.length + 1);
  const counts = new Array<number>(shape.reduce((a, b) => a * b, 1)).fill(0);
  for (let r = 0; r < input.table.n; r++) {
    let idx = 0;
    cols.forEach((c, a) => {
      const code = c.codes[r]!;
      idx = idx * shape[a]! + (code < 0 ? c.levels.length : code);
    });
    counts[idx]!++;
  }
  const rel = releaseTable(counts, shape, input, input.label ?? 'count');
  return {
    answer: { kind: 'count', ...guard(input.policy), by, levels: cols.map((c) => [...c.levels, null]), counts: rel.counts, ...(rel.dp ? { noise: rel.dp.info() } : {}) },
    ...(rel.spend ? { spend: rel.spend } : {}),
  };
}



function sameLevels(a: Array<Array<string | null>>, b: Array<Array<string | null>>): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

export function combineCount(answers: Record<string, CountAnswer>): CountResult {
  const ids = Object.keys(answers).sort();
  if (ids.length === 0) throw new Error('combineCount: no site answered');
  const first = answers[ids[0]!]!;
  for (const id of ids) if (!sameLevels(answers[id]!.levels, first.levels) || answers[id]!.counts.length !== first.counts.length) throw new Error(`combineCount: site ${id} answered over different levels`);
  const cells = first.counts.map((_, i) => pooledCell(ids.map((id) => [id, answers[id]!.counts[i]!, answers[id]!.noise?.sd[0] ?? 0])));
  return { kind: 'count', by: first.by, levels: first.levels, cells, sites: Object.fromEntries(ids.map((id) => [id, [...answers[id]!.counts]])) };
}

function pooledCell(parts: Array<[string, number | null, number]>): PooledCell {
  let count = 0, v = 0;
  const suppressedAt: string[] = [];
  for (const [id, c, sd] of parts) {
    if (c === null) suppressedAt.push(id);
    else {
      count += c;
      v += sd * sd;
    }
  }
  return { count, suppressedAt, noiseSd: Math.sqrt(v) };
}

// ---- summary -------------------------------------------------------------------------------------------------

const DEFAULT_STATS: NonNullable<SummaryQuery['statistics']> = ['mean', 'variance', 'sd'];

export function siteSummary(q: SummaryQuery, input: SiteInput): Answered<SummaryAnswer> {
  const stats = q.statistics ?? DEFAULT_STATS;
  const x = input.table.numeric(q.column);
  const g = q.by !== undefined ? input.table.categorical(q.by, 'by-column') : undefined;
  const levels: Array<string | null> = g ? [...g.levels, null] : ['all'];
  const clamp = (v: number) => (q.bounds ? Math.min(q.bounds[1], Math.max(q.bounds[0], v)) : v);
  const values: number[][] = levels.map(() => []);
  x.forEach((v, r) => {
    if (v === null) return;
    const code = g ? g.codes[r]! : 0;
    values[g && code < 0 ? g.levels.length : code]!.push(clamp(v));
  });
  const ns = values.map((v) => v.length);
  const released = suppressTable(ns, [ns.length], input.policy);
  const base = { kind: 'summary' as const, ...guard(input.policy), column: q.column, by: q.by ?? null, levels };
  const needSq = stats.includes('variance') || stats.includes('sd');
  if (input.policy.dp) {
    if (stats.includes('min') || stats.includes('max')) throw new QueryRefused('policy', 'this site adds DP noise to every release and min/max have no DP mechanism: ask for quantiles (a histogram) instead');
    if (!q.bounds) throw new QueryRefused('policy', `this site adds DP noise: the summary of "${q.column}" must declare bounds: [lower, upper] (they set the noise's sensitivity)`);
    const m = Math.max(Math.abs(q.bounds[0]), Math.abs(q.bounds[1]));
    const dp = DpRelease.plan(input.policy, input.dp, needSq ? [1, m, m * m] : [1, m]);
    const groups = values.map((v) => {
      const n = dp.add(v.length, 0, input.noise);
      const sum = dp.add(v.reduce((a, b) => a + b, 0), 1, input.noise);
      const sumSq = needSq ? dp.add(v.reduce((a, b) => a + b * b, 0), 2, input.noise) : undefined;
      return { n, sum, sumSq };
    });
    const spend = dp.spend(input.dp!, input.label ?? 'summary');
    const noisyN = suppressTable(groups.map((s) => s.n), [groups.length], input.policy);
    return {
      answer: { ...base, groups: groups.map((s, i): SummaryGroup | null => (noisyN[i] === null ? null : { n: noisyN[i]!, sum: s.sum, ...(s.sumSq !== undefined ? { sumSq: s.sumSq } : {}) })), noise: dp.info() },
      spend,
    };
  }
  const [lo, hi] = input.policy.minMaxNoise ?? [0.1, 0.3];
  const groups = values.map((v, i): SummaryGroup | null => {
    const n = released[i];
    if (n === null || n === undefined) return null;
    if (v.length === 0) return { n, mean: 0, m2: 0 }; // an empty group (released as a count of 0)
    const mean = v.reduce((a, b) => a + b, 0) / v.length;
    const m2 = v.reduce((a, b) => a + (b - mean) ** 2, 0);
    const out: SummaryGroup = { n, mean, m2 };
    const sd = v.length > 1 ? Math.sqrt(m2 / (v.length - 1)) : 0;
    if (stats.includes('min')) out.min = Math.min(...v) - (lo + (hi - lo) * input.noise.uniform()) * sd;
    if (stats.includes('max')) out.max = Math.max(...v) + (lo + (hi - lo) * input.noise.uniform()) * sd;
    return out;
  });
  return { answer: { ...base, groups, ...(stats.includes('min') || stats.includes('max') ? { minMaxNoise: [lo, hi] as [number, number] } : {}) } };
}



function isExact(g: SummaryGroup): g is Extract<SummaryGroup, { mean: number }> {
  return 'mean' in g;
}

export function combineSummary(answers: Record<string, SummaryAnswer>): SummaryResult {
  const ids = Object.keys(answers).sort();
  if (ids.length === 0) throw new Error('combineSummary: no site answered');
  const first = answers[ids[0]!]!;
  for (const id of ids) if (JSON.stringify(answers[id]!.levels) !== JSON.stringify(first.levels)) throw new Error(`combineSummary: site ${id} answered over different levels`);
  const groups = first.levels.map((level, i): PooledSummary => {
    const parts = ids.map((id) => ({ id, g: answers[id]!.groups[i] ?? null, noise: answers[id]!.noise }));
    const suppressedAt = parts.filter((p) => p.g === null).map((p) => p.id);
    const have = parts.filter((p): p is { id: string; g: SummaryGroup; noise: SummaryAnswer['noise'] } => p.g !== null);
    const mins = have.flatMap((p) => (isExact(p.g) && p.g.min !== undefined ? [p.g.min] : []));
    const maxs = have.flatMap((p) => (isExact(p.g) && p.g.max !== undefined ? [p.g.max] : []));
    const extremes = { ...(mins.length ? { min: Math.min(...mins) } : {}), ...(maxs.length ? { max: Math.max(...maxs) } : {}) };
    if (have.every((p) => isExact(p.g))) {
      // Chan, Golub & LeVeque: pairwise combination of (n, mean, m2).
      let n = 0, mean = 0, m2 = 0;
      for (const p of have) {
        const g = p.g as Extract<SummaryGroup, { mean: number }>;
        if (g.n === 0) continue;
        const nn = n + g.n, delta = g.mean - mean;
        mean += (delta * g.n) / nn;
        m2 += g.m2 + (delta * delta * n * g.n) / nn;
        n = nn;
      }
      const variance = n > 1 ? m2 / (n - 1) : NaN;
      return { level, n, mean: n > 0 ? mean : NaN, variance, sd: Math.sqrt(variance), ...extremes, suppressedAt };
    }
    let n = 0, sum = 0, sumSq = 0, vn = 0, vs = 0;
    for (const p of have) {
      const g = p.g;
      if (isExact(g)) {
        n += g.n;
        sum += g.n * g.mean;
        sumSq += g.m2 + g.n * g.mean * g.mean;
      } else {
        n += g.n;
        sum += g.sum;
        sumSq += g.sumSq ?? NaN;
        const sd = p.noise!.sd;
        vn += sd[0]! ** 2;
        vs += sd[1]! ** 2;
      }
    }
    const mean = sum / n;
    const variance = (sumSq - (sum * sum) / n) / (n - 1);
    // mean = S/N: var ≈ var(S)/N² + S²·var(N)/N⁴.
    const meanNoise = Math.sqrt(vs / (n * n) + (sum * sum * vn) / n ** 4);
    return { level, n, mean, variance, sd: Math.sqrt(Math.max(0, variance)), ...extremes, suppressedAt, noise: { n: Math.sqrt(vn), mean: meanNoise } };
  });
  const sites = Object.fromEntries(ids.map((id) => [id, answers[id]!.groups.map((g, i) => {
    if (g === null) return null;
    const level = first.levels[i]!;
    if (isExact(g)) return { level, n: g.n, mean: g.n > 0 ? g.mean : NaN, sd: g.n > 1 ? Math.sqrt(g.m2 / (g.n - 1)) : NaN };
    return { level, n: g.n, mean: g.sum / g.n, sd: g.sumSq === undefined ? NaN : Math.sqrt(Math.max(0, (g.sumSq - (g.sum * g.sum) / g.n) / (g.n - 1))) };
  })]));
  return { kind: 'summary', column: first.column, by: first.by, groups, sites };
}

// ---- histogram and quantiles ---------------------------------------------------------------------------------

export function binEdges(range: [number, number], bins: number): number[] {
  return Array.from({ length: bins + 1 }, (_, i) => (i === bins ? range[1] : range[0] + ((range[1] - range[0]) * i) / bins));
}

/** Index in [below, bin 0 … bin k−1, above]. */
export function binOf(v: number, edges: readonly number[]): number {
  const k = edges.length - 1;
  if (v < edges[0]!) return 0;
  if (v >= edges[k]!) return k + 1;
  let lo = 0, hi = k; // edges[lo] ≤ v < edges[hi]
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (v >= edges[mid]!) lo = mid;
    else hi = mid;
  }
  return lo + 1;
}

export function siteHistogram(q: HistogramQuery | QuantilesQuery, input: SiteInput): Answered<HistogramAnswer> {
  const x = input.table.numeric(q.column);
  const edges = binEdges(q.range, q.bins);
  const counts = new Array<number>(q.bins + 3).fill(0); // below, bins, above, missing
  for (const v of x) counts[v === null ? q.bins + 2 : binOf(v, edges)]!++;
  const rel = releaseTable(counts, [counts.length], input, input.label ?? q.kind);
  // Under DP the total is the sum of the noisy cells before suppression (post-processing, no extra spend).
  const total = releaseCount(rel.values.reduce((a, b) => a + b, 0), input.policy);
  return {
    answer: { kind: 'histogram', ...guard(input.policy), column: q.column, edges, counts: rel.counts, total, ...(rel.dp ? { noise: rel.dp.info() } : {}) },
    ...(rel.spend ? { spend: rel.spend } : {}),
  };
}


export function combineHistogram(answers: Record<string, HistogramAnswer>): HistogramResult {
  const ids = Object.keys(answers).sort();
  if (ids.length === 0) throw new Error('combineHistogram: no site answered');
  const first = answers[ids[0]!]!;
  for (const id of ids) if (JSON.stringify(answers[id]!.edges) !== JSON.stringify(first.edges)) throw new Error(`combineHistogram: site ${id} used different bins`);
  const cells = first.counts.map((_, i) => pooledCell(ids.map((id) => [id, answers[id]!.counts[i]!, answers[id]!.noise?.sd[0] ?? 0])));
  return { kind: 'histogram', column: first.column, edges: first.edges, cells, sites: Object.fromEntries(ids.map((id) => [id, [...answers[id]!.counts]])) };
}



/**
 * Quantiles from the sites' histograms. Each site's suppressed mass (its total minus what it released,
 * the missing cell excluded) is spread evenly over its suppressed bins for the estimate; the bounds
 * hold whatever those cells hold: a suppressed cell can be anything from 0 to all of that mass.
 */
export function combineQuantiles(answers: Record<string, HistogramAnswer>, probs: readonly number[]): QuantilesResult {
  const ids = Object.keys(answers).sort();
  const hist = combineHistogram(answers);
  if (ids.some((id) => answers[id]!.noise)) throw new Error('combineQuantiles: DP histograms carry noise; read quantiles from combineHistogram with the stated noise instead');
  const k = hist.edges.length - 1;
  const cellsOf = (a: HistogramAnswer) => a.counts.slice(0, k + 2); // below, bins, above (missing excluded)
  let n = 0;
  const guess = new Array<number>(k + 2).fill(0);
  const incompleteAt: string[] = [];
  const perSite = ids.map((id) => {
    const a = answers[id]!;
    const cells = cellsOf(a);
    const missing = a.counts[k + 2];
    if (a.total === null || missing === null) throw new Error(`combineQuantiles: site ${id} suppressed its total or missing count; its histogram cannot be placed`);
    const nonMissing = a.total - missing!;
    const released = cells.reduce<number>((s, c) => s + (c ?? 0), 0);
    const hidden = nonMissing - released;
    const hiddenCells = cells.filter((c) => c === null).length;
    if (hiddenCells) incompleteAt.push(id);
    cells.forEach((c, i) => (guess[i]! += c ?? hidden / hiddenCells));
    n += nonMissing;
    return { cells, hidden };
  });
  // Cumulative bounds through cell i (inclusive), summed over sites.
  const cumLo = new Array<number>(k + 2).fill(0), cumHi = new Array<number>(k + 2).fill(0);
  for (const s of perSite) {
    let rel = 0;
    for (let i = 0; i < k + 2; i++) {
      rel += s.cells[i] ?? 0;
      const before = s.cells.slice(0, i + 1).some((c) => c === null), after = s.cells.slice(i + 1).some((c) => c === null);
      cumLo[i]! += rel + (after ? 0 : s.hidden);
      cumHi[i]! += rel + (before ? s.hidden : 0);
    }
  }
  const edgeAt = (i: number, side: 'left' | 'right') => (i === 0 ? (side === 'left' ? -Infinity : hist.edges[0]!) : i === k + 1 ? (side === 'left' ? hist.edges[k]! : Infinity) : hist.edges[side === 'left' ? i - 1 : i]!);
  const quantiles = probs.map((p): QuantileEstimate => {
    const r = p * n;
    // Sample quantiles interpolate between order statistics of ranks ⌊pN⌋ … ⌊pN⌋ + 2 (R's types 1–9, numpy's methods).
    const lowRank = Math.max(1, Math.floor(r)), highRank = Math.min(n, Math.floor(r) + 2);
    const lowerCell = cumHi.findIndex((c) => c >= lowRank);
    const upperCell = cumLo.findIndex((c) => c >= highRank);
    let cum = 0, estimate = NaN;
    for (let i = 0; i < k + 2; i++) {
      const c = guess[i]!;
      if (cum + c >= r && c > 0) {
        estimate = i === 0 ? hist.edges[0]! : i === k + 1 ? hist.edges[k]! : hist.edges[i - 1]! + ((r - cum) / c) * (hist.edges[i]! - hist.edges[i - 1]!);
        break;
      }
      cum += c;
    }
    return { prob: p, estimate, lower: edgeAt(lowerCell < 0 ? k + 1 : lowerCell, 'left'), upper: edgeAt(upperCell < 0 ? k + 1 : upperCell, 'right') };
  });
  return { kind: 'quantiles', column: hist.column, n, quantiles, incompleteAt };
}

// ---- missingness ---------------------------------------------------------------------------------------------

/** Every column the data schema names (features, task and split columns), in its order. */
function schemaColumns(table: SiteTable): string[] {
  return [...table.columns.keys()];
}

export function siteMissingness(q: MissingnessQuery, input: SiteInput): Answered<MissingnessAnswer> {
  const columns = q.columns ?? schemaColumns(input.table);
  const raw = columns.map((c) => {
    const m = input.table.missing(c).filter(Boolean).length;
    return [m, input.table.n - m];
  });
  let dp: DpRelease | undefined, spend: PrivacySpend | undefined;
  if (input.policy.dp) {
    // One row is counted once per column (missing or present): m components of sensitivity 1.
    dp = DpRelease.plan(input.policy, input.dp, columns.map(() => 1));
    raw.forEach((pair, j) => pair.forEach((v, i) => (pair[i] = dp!.add(v, j, input.noise))));
    spend = dp.spend(input.dp!, input.label ?? 'missingness');
  }
  const out = raw.map((pair, j) => {
    const [missing, present] = suppressTable(pair, [2], input.policy);
    return { column: columns[j]!, missing: missing!, present: present! };
  });
  return { answer: { kind: 'missingness', ...guard(input.policy), columns: out, ...(dp ? { noise: dp.info() } : {}) }, ...(spend ? { spend } : {}) };
}


export function combineMissingness(answers: Record<string, MissingnessAnswer>): MissingnessResult {
  const ids = Object.keys(answers).sort();
  if (ids.length === 0) throw new Error('combineMissingness: no site answered');
  const names = answers[ids[0]!]!.columns.map((c) => c.column);
  return {
    kind: 'missingness',
    columns: names.map((column, j) => {
      const parts = ids.map((id) => {
        const c = answers[id]!.columns[j];
        if (!c || c.column !== column) throw new Error(`combineMissingness: site ${id} answered other columns`);
        return { id, c, sd: answers[id]!.noise?.sd[j] ?? 0 };
      });
      const missing = pooledCell(parts.map((p) => [p.id, p.c.missing, p.sd]));
      const present = pooledCell(parts.map((p) => [p.id, p.c.present, p.sd]));
      const both = parts.filter((p) => p.c.missing !== null && p.c.present !== null);
      const m = both.reduce((a, p) => a + p.c.missing!, 0), t = both.reduce((a, p) => a + p.c.missing! + p.c.present!, 0);
      return { column, missing, present, fraction: t > 0 ? m / t : NaN };
    }),
  };
}
