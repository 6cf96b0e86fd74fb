/**
 * An analytics result as files: its CSV table(s) and the SVG plot that suits it (Kaplan–Meier curves with
 * confidence bands, a forest plot of hazard ratios, a histogram). One formatter for every client: `setu study
 * results --csv/--plot` and `setu analytics` (cli/analytics-report.ts) and the dashboard's downloads and plots
 * (web/app/analytics.tsx). Pure: it imports only the result types (results.ts, which import nothing) and the chart functions of `plot`, so the
 * browser bundle can take it.
 */
import type { CoxResult, KmCurve, KmResult, LogRankQueryResult, QueryResult } from './results.js';
import { forestSvg, histogramSvg, kaplanMeierSvg, type KmSeries } from '../plot/charts.js';

/** A file-safe name for a query of a study: its name, or kind-N (N from 1). */
export function queryFileName(e: { name?: string; kind: string; index: number }): string {
  return (e.name ?? `${e.kind}-${e.index + 1}`).replace(/[^A-Za-z0-9._-]/g, '_');
}

export const pval = (p: number): string => (p < 1e-4 ? p.toExponential(2) : p.toFixed(4));
export const levelName = (l: string | null): string => (l === null ? '(missing)' : l);

export function csvOf(header: string[], rows: Array<Array<string | number | null>>): string {
  const q = (v: string | number | null) => (v === null ? '' : typeof v === 'number' ? String(v) : /[",\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);
  return [header, ...rows].map((r) => r.map(q).join(',')).join('\n') + '\n';
}

/** A count result's cells with the level of each `by` column (the last column varies fastest). */
export function countRows(r: Extract<QueryResult, { kind: 'count' }>): Array<{ key: string[]; c: (typeof r.cells)[number] }> {
  return r.cells.map((c, i) => {
    let rest = i;
    const key = [...r.levels].reverse().map((lv) => {
      const v = lv[rest % lv.length]!;
      rest = Math.floor(rest / lv.length);
      return levelName(v);
    }).reverse();
    return { key, c };
  });
}

/** A histogram's row labels: below, each [lo, hi), at or above, missing (the order of its cells). */
export function histogramLabels(edges: readonly number[]): string[] {
  return ['below', ...edges.slice(0, -1).map((e, i) => `[${e}, ${edges[i + 1]})`), 'at or above', 'missing'];
}

/** A Kaplan–Meier result's curves: one per group, or the overall one. */
export function kmCurves(r: KmResult): Array<[string, KmCurve]> {
  return r.groups.length ? r.groups.map((c, g) => [`${r.by}=${r.levels[g]}`, c]) : [['all', r.overall]];
}

/** The CSV file(s) of one result, by file name (header row first): what `setu study results --csv` prints. */
export function resultCsv(name: string, r: QueryResult): Record<string, string> {
  const file = `${name}.csv`;
  switch (r.kind) {
    case 'count':
      return { [file]: csvOf([...r.by, 'count', 'noise_sd', 'suppressed_at'], countRows(r).map(({ key, c }) => [...key, c.count, c.noiseSd, c.suppressedAt.join(' ')])) };
    case 'summary':
      return { [file]: csvOf(['level', 'n', 'mean', 'sd', 'variance', 'min', 'max', 'noise_sd_mean', 'suppressed_at'], r.groups.map((g) => [levelName(g.level), g.n, g.mean, g.sd, g.variance, g.min ?? null, g.max ?? null, g.noise?.mean ?? null, g.suppressedAt.join(' ')])) };
    case 'histogram': {
      const k = r.edges.length - 1, labels = histogramLabels(r.edges);
      return { [file]: csvOf(['bin', 'lower', 'upper', 'count', 'noise_sd', 'suppressed_at'], r.cells.map((c, i) => [labels[i]!, i === 0 || i > k ? null : r.edges[i - 1]!, i === 0 || i > k ? null : r.edges[i]!, c.count, c.noiseSd, c.suppressedAt.join(' ')])) };
    }
    case 'quantiles':
      return { [file]: csvOf(['prob', 'estimate', 'lower', 'upper'], r.quantiles.map((q) => [q.prob, q.estimate, q.lower, q.upper])) };
    case 'missingness':
      return { [file]: csvOf(['column', 'missing', 'present', 'fraction', 'suppressed_at'], r.columns.map((c) => [c.column, c.missing.count, c.present.count, c.fraction, [...new Set([...c.missing.suppressedAt, ...c.present.suppressedAt])].join(' ')])) };
    case 'kaplan-meier':
      return { [file]: csvOf(['curve', 'time', 'n_risk', 'n_event', 'n_censor', 'surv', 'std_err', 'lower', 'upper'], kmCurves(r).flatMap(([label, c]) => c.time.map((t, i) => [label, t, c.nRisk[i]!, c.nEvent[i]!, c.nCensor[i]!, c.surv[i]!, c.stdErr[i]!, c.lower[i]!, c.upper[i]!]))) };
    case 'log-rank': {
      const lr: LogRankQueryResult = r;
      return { [file]: csvOf(['group', 'n', 'observed', 'expected', 'chisq', 'df', 'p'], lr.levels.map((l, g) => [l, lr.n[g]!, lr.observed[g]!, lr.expected[g]!, lr.chisq, lr.df, lr.p])) };
    }
    default: {
      const c: CoxResult = r;
      return { [file]: csvOf(['covariate', 'coef', 'hazard_ratio', 'lower', 'upper', 'se', 'z', 'p'], c.names.map((n, j) => [n, c.coef[j]!, c.hazardRatio[j]!, c.lower[j]!, c.upper[j]!, c.se[j]!, c.z[j]!, c.p[j]!])) };
    }
  }
}

/** The SVG plot of one result, by file name; none for counts, summaries, quantiles, missingness and log-rank (tables). */
export function resultSvg(name: string, r: QueryResult): Record<string, string> {
  const file = `${name}.svg`;
  switch (r.kind) {
    case 'histogram': {
      const k = r.edges.length - 1;
      return { [file]: histogramSvg({ title: `${r.column} (federated histogram)`, edges: r.edges, counts: r.cells.slice(1, k + 1).map((c) => (c.suppressedAt.length && c.count === 0 ? null : c.count)), xLabel: r.column }) };
    }
    case 'kaplan-meier': {
      const conf = `${Math.round(r.overall.confLevel * 100)}%`;
      const series: KmSeries[] = kmCurves(r).map(([label, c]) => ({ label, time: c.time, surv: c.surv, lower: c.lower, upper: c.upper, censored: c.time.filter((_, i) => c.nCensor[i]! > 0) }));
      return { [file]: kaplanMeierSvg({ title: `Kaplan–Meier${r.by ? ` by ${r.by}` : ''} (${conf} ${r.overall.confType} CI)`, series, xLabel: 'time' }) };
    }
    case 'cox': {
      const conf = `${Math.round(r.confLevel * 100)}%`;
      return { [file]: forestSvg({ title: `Cox model: hazard ratios (${conf} CI)`, rows: r.names.map((n, j) => ({ label: n, estimate: r.hazardRatio[j]!, lower: r.lower[j]!, upper: r.upper[j]!, note: `p = ${pval(r.p[j]!)}` })), xLabel: `hazard ratio (${conf} CI, log scale)` }) };
    }
    default:
      return {};
  }
}
