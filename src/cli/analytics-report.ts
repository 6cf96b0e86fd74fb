/**
 * Analytics results for people and machines: a text table per result here; its CSV rows and the SVG plot that
 * suits it come from analytics/export.ts, shared with the dashboard.
 */
import type { LogRankQueryResult, QueryResult } from '../analytics/query.js';
import type { CoxResult } from '../analytics/survival/cox.js';
import type { PooledCell } from '../analytics/statistics.js';
import { countRows, histogramLabels, kmCurves, levelName, pval, resultCsv, resultSvg } from '../analytics/export.js';
import { table } from './table.js';

const num = (v: number | undefined, digits = 4): string => (v === undefined || Number.isNaN(v) ? 'NA' : !Number.isFinite(v) ? String(v) : Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(3) : v.toFixed(digits));
const cell = (c: PooledCell): string => `${c.noiseSd > 0 ? c.count.toFixed(1) : c.count}${c.suppressedAt.length ? ` (+ suppressed at ${c.suppressedAt.join(', ')})` : ''}${c.noiseSd > 0 ? ` ± ${c.noiseSd.toFixed(1)}` : ''}`;

export interface Report {
  text: string;
  /** CSV files by name (header row first). */
  csv: Record<string, string>;
  svg: Record<string, string>;
}

/** The text table of one result, with its CSV files and plot from analytics/export.ts (the dashboard's too). */
export function report(name: string, r: QueryResult): Report {
  return { text: reportText(r), csv: resultCsv(name, r), svg: resultSvg(name, r) };
}

function reportText(r: QueryResult): string {
  switch (r.kind) {
    case 'count': {
      const header = [...r.by, 'count'];
      return table(header.length > 1 ? header : ['count'], countRows(r).map(({ key, c }) => [...key, cell(c)]), [...r.by.map(() => 'l' as const), 'r']);
    }
    case 'summary': {
      const header = [r.by ?? '', 'n', 'mean', 'sd', 'variance', 'min', 'max', 'suppressed at'];
      const rows = r.groups.map((g) => [r.by ? levelName(g.level) : 'all', g.n, num(g.mean), num(g.sd), num(g.variance), num(g.min), num(g.max), g.suppressedAt.join(', ')]);
      return `${r.column}\n${table(header, rows)}${r.groups.some((g) => g.min !== undefined) ? '\nmin/max: moved outward by each site (a lower bound on the minimum, an upper bound on the maximum)' : ''}`;
    }
    case 'histogram': {
      const labels = histogramLabels(r.edges);
      return `${r.column}\n${table(['bin', 'count'], r.cells.map((c, i) => [labels[i]!, cell(c)]))}`;
    }
    case 'quantiles':
      return `${r.column} (n = ${r.n}${r.incompleteAt.length ? `; suppressed bins at ${r.incompleteAt.join(', ')}` : ''})\n${table(['p', 'estimate', 'lower', 'upper'], r.quantiles.map((q) => [q.prob, num(q.estimate), num(q.lower), num(q.upper)]))}`;
    case 'missingness':
      return table(['column', 'missing', 'present', 'missing %'], r.columns.map((c) => [c.column, cell(c.missing), cell(c.present), `${Number.isFinite(c.fraction) ? (100 * c.fraction).toFixed(1) : 'NA'}${c.missing.suppressedAt.length ? '*' : ''}`])) +
        (r.columns.some((c) => c.missing.suppressedAt.length) ? '\n* over the sites that released both counts' : '');
    case 'kaplan-meier': {
      const curves = kmCurves(r);
      const conf = `${Math.round(r.overall.confLevel * 100)}%`;
      const rows = curves.map(([label, c]) => [label, c.n, c.events, num(c.median.estimate, 1), num(c.median.lower, 1), num(c.median.upper, 1)]);
      if (r.groups.length) rows.push(['all', r.overall.n, r.overall.events, num(r.overall.median.estimate, 1), num(r.overall.median.lower, 1), num(r.overall.median.upper, 1)]);
      const exact = Number.isFinite(r.overall.exactUntil) ? `\nsome sites stopped where fewer than their minimum remained at risk: the curves are the pooled data's up to t = ${r.overall.exactUntil}; after it those sites' remaining subjects count as censored` : '';
      return table(['curve', 'n', 'events', 'median', `${conf} LCL`, `${conf} UCL`], rows) + exact;
    }
    case 'log-rank':
      return logRankText(r);
    default:
      return coxText(r);
  }
}

function logRankText(r: LogRankQueryResult): string {
  const G = r.levels.length;
  const rows = r.levels.map((l, g) => {
    const oe = r.observed[g]! - r.expected[g]!;
    return [`${r.group}=${l}`, r.n[g]!, r.observed[g]!, num(r.expected[g]), num((oe * oe) / r.expected[g]!), num((oe * oe) / r.variance[g * G + g]!)];
  });
  return `${table(['group', 'N', 'observed', 'expected', '(O-E)^2/E', '(O-E)^2/V'], rows)}\nchisq = ${num(r.chisq)} on ${r.df} df, p = ${pval(r.p)}${r.strata === 'site' ? ' (stratified by site)' : ''}`;
}

function coxText(r: CoxResult): string {
  const conf = `${Math.round(r.confLevel * 100)}%`;
  const rows = r.names.map((n, j) => [n, num(r.coef[j]), num(r.hazardRatio[j]), num(r.lower[j]), num(r.upper[j]), num(r.se[j]), num(r.z[j]), pval(r.p[j]!)]);
  const notes = [
    `n = ${r.n}, events = ${r.events}; ties ${r.ties}; ${r.strata === 'site' ? 'one baseline hazard per site (stratified)' : 'one shared baseline hazard'}; ${r.converged ? `converged in ${r.iterations} iterations` : `NOT converged after ${r.iterations} iterations`}`,
    `likelihood ratio test = ${num(r.likelihoodRatio.statistic)} on ${r.likelihoodRatio.df} df, p = ${pval(r.likelihoodRatio.p)}`,
    `Wald test            = ${num(r.wald.statistic)} on ${r.wald.df} df, p = ${pval(r.wald.p)}`,
    `score (log-rank) test = ${num(r.score.statistic)} on ${r.score.df} df, p = ${pval(r.score.p)}`,
    ...(r.excludedSites.length ? [`sites below their minimum, not in the fit: ${r.excludedSites.join(', ')}`] : []),
    ...(r.truncatedSites.length ? [`sites whose risk sets stopped at their minimum (their last subjects count as censored there): ${r.truncatedSites.join(', ')}`] : []),
  ];
  return `${table(['covariate', 'coef', 'HR', `${conf} lower`, `${conf} upper`, 'se(coef)', 'z', 'p'], rows)}\n${notes.join('\n')}`;
}
