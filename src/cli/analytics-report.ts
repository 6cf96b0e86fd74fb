/**
 * Analytics results for people and machines: a text table per result, CSV rows, and the SVG plot that
 * suits it (Kaplan–Meier curves, a forest plot of hazard ratios, a histogram).
 */
import type { KmResult, LogRankQueryResult, QueryResult } from '../analytics/query.js';
import type { CoxResult } from '../analytics/survival/cox.js';
import type { KmCurve } from '../analytics/survival/km.js';
import type { PooledCell } from '../analytics/statistics.js';
import { forestSvg, histogramSvg, kaplanMeierSvg, type KmSeries } from '../plot/charts.js';
import { table } from './table.js';

const num = (v: number | undefined, digits = 4): string => (v === undefined || Number.isNaN(v) ? 'NA' : !Number.isFinite(v) ? String(v) : Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(3) : v.toFixed(digits));
const pval = (p: number): string => (p < 1e-4 ? p.toExponential(2) : p.toFixed(4));
const cell = (c: PooledCell): string => `${c.noiseSd > 0 ? c.count.toFixed(1) : c.count}${c.suppressedAt.length ? ` (+ suppressed at ${c.suppressedAt.join(', ')})` : ''}${c.noiseSd > 0 ? ` ± ${c.noiseSd.toFixed(1)}` : ''}`;
const levelName = (l: string | null) => (l === null ? '(missing)' : l);

export interface Report {
  text: string;
  /** CSV files by name (header row first). */
  csv: Record<string, string>;
  svg: Record<string, string>;
}

function csvOf(header: string[], rows: Array<Array<string | number | null>>): string {
  const q = (v: string | number | null) => (v === null ? '' : typeof v === 'number' ? String(v) : /[",\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);
  return [header, ...rows].map((r) => r.map(q).join(',')).join('\n') + '\n';
}

function kmLabel(r: KmResult, g: number): string {
  return `${r.by}=${r.levels[g]}`;
}

function kmCurves(r: KmResult): Array<[string, KmCurve]> {
  return r.groups.length ? r.groups.map((c, g) => [kmLabel(r, g), c]) : [['all', r.overall]];
}

function censorTimes(c: KmCurve): number[] {
  return c.time.filter((_, i) => c.nCensor[i]! > 0);
}

export function report(name: string, r: QueryResult): Report {
  switch (r.kind) {
    case 'count': {
      const rows = r.cells.map((c, i) => {
        let rest = i;
        const key = [...r.levels].reverse().map((lv) => {
          const v = lv[rest % lv.length]!;
          rest = Math.floor(rest / lv.length);
          return levelName(v);
        }).reverse();
        return { key, c };
      });
      const header = [...r.by, 'count'];
      return {
        text: table(header.length > 1 ? header : ['count'], rows.map(({ key, c }) => [...key, cell(c)]), [...r.by.map(() => 'l' as const), 'r']),
        csv: { [`${name}.csv`]: csvOf([...r.by, 'count', 'noise_sd', 'suppressed_at'], rows.map(({ key, c }) => [...key, c.count, c.noiseSd, c.suppressedAt.join(' ')])) },
        svg: {},
      };
    }
    case 'summary': {
      const header = [r.by ?? '', 'n', 'mean', 'sd', 'variance', 'min', 'max', 'suppressed at'];
      const rows = r.groups.map((g) => [r.by ? levelName(g.level) : 'all', g.n, num(g.mean), num(g.sd), num(g.variance), num(g.min), num(g.max), g.suppressedAt.join(', ')]);
      return {
        text: `${r.column}\n${table(header, rows)}${r.groups.some((g) => g.min !== undefined) ? '\nmin/max: moved outward by each site (a lower bound on the minimum, an upper bound on the maximum)' : ''}`,
        csv: { [`${name}.csv`]: csvOf(['level', 'n', 'mean', 'sd', 'variance', 'min', 'max', 'noise_sd_mean', 'suppressed_at'], r.groups.map((g) => [levelName(g.level), g.n, g.mean, g.sd, g.variance, g.min ?? null, g.max ?? null, g.noise?.mean ?? null, g.suppressedAt.join(' ')])) },
        svg: {},
      };
    }
    case 'histogram': {
      const k = r.edges.length - 1;
      const labels = ['below', ...r.edges.slice(0, -1).map((e, i) => `[${e}, ${r.edges[i + 1]})`), 'at or above', 'missing'];
      return {
        text: `${r.column}\n${table(['bin', 'count'], r.cells.map((c, i) => [labels[i]!, cell(c)]))}`,
        csv: { [`${name}.csv`]: csvOf(['bin', 'lower', 'upper', 'count', 'noise_sd', 'suppressed_at'], r.cells.map((c, i) => [labels[i]!, i === 0 || i > k ? null : r.edges[i - 1]!, i === 0 || i > k ? null : r.edges[i]!, c.count, c.noiseSd, c.suppressedAt.join(' ')])) },
        svg: { [`${name}.svg`]: histogramSvg({ title: `${r.column} (federated histogram)`, edges: r.edges, counts: r.cells.slice(1, k + 1).map((c) => (c.suppressedAt.length && c.count === 0 ? null : c.count)), xLabel: r.column }) },
      };
    }
    case 'quantiles':
      return {
        text: `${r.column} (n = ${r.n}${r.incompleteAt.length ? `; suppressed bins at ${r.incompleteAt.join(', ')}` : ''})\n${table(['p', 'estimate', 'lower', 'upper'], r.quantiles.map((q) => [q.prob, num(q.estimate), num(q.lower), num(q.upper)]))}`,
        csv: { [`${name}.csv`]: csvOf(['prob', 'estimate', 'lower', 'upper'], r.quantiles.map((q) => [q.prob, q.estimate, q.lower, q.upper])) },
        svg: {},
      };
    case 'missingness':
      return {
        text: table(['column', 'missing', 'present', 'missing %'], r.columns.map((c) => [c.column, cell(c.missing), cell(c.present), `${Number.isFinite(c.fraction) ? (100 * c.fraction).toFixed(1) : 'NA'}${c.missing.suppressedAt.length ? '*' : ''}`])) +
          (r.columns.some((c) => c.missing.suppressedAt.length) ? '\n* over the sites that released both counts' : ''),
        csv: { [`${name}.csv`]: csvOf(['column', 'missing', 'present', 'fraction', 'suppressed_at'], r.columns.map((c) => [c.column, c.missing.count, c.present.count, c.fraction, [...new Set([...c.missing.suppressedAt, ...c.present.suppressedAt])].join(' ')])) },
        svg: {},
      };
    case 'kaplan-meier': {
      const curves = kmCurves(r);
      const conf = `${Math.round(r.overall.confLevel * 100)}%`;
      const rows = curves.map(([label, c]) => [label, c.n, c.events, num(c.median.estimate, 1), num(c.median.lower, 1), num(c.median.upper, 1)]);
      if (r.groups.length) rows.push(['all', r.overall.n, r.overall.events, num(r.overall.median.estimate, 1), num(r.overall.median.lower, 1), num(r.overall.median.upper, 1)]);
      const exact = Number.isFinite(r.overall.exactUntil) ? `\nsome sites stopped where fewer than their minimum remained at risk: the curves are the pooled data's up to t = ${r.overall.exactUntil}; after it those sites' remaining subjects count as censored` : '';
      const series: KmSeries[] = curves.map(([label, c]) => ({ label, time: c.time, surv: c.surv, lower: c.lower, upper: c.upper, censored: censorTimes(c) }));
      return {
        text: table(['curve', 'n', 'events', 'median', `${conf} LCL`, `${conf} UCL`], rows) + exact,
        csv: { [`${name}.csv`]: csvOf(['curve', 'time', 'n_risk', 'n_event', 'n_censor', 'surv', 'std_err', 'lower', 'upper'], curves.flatMap(([label, c]) => c.time.map((t, i) => [label, t, c.nRisk[i]!, c.nEvent[i]!, c.nCensor[i]!, c.surv[i]!, c.stdErr[i]!, c.lower[i]!, c.upper[i]!]))) },
        svg: { [`${name}.svg`]: kaplanMeierSvg({ title: `Kaplan–Meier${r.by ? ` by ${r.by}` : ''} (${conf} ${r.overall.confType} CI)`, series, xLabel: 'time' }) },
      };
    }
    case 'log-rank':
      return logRankReport(name, r);
    default:
      return coxReport(name, r);
  }
}

function logRankReport(name: string, r: LogRankQueryResult): Report {
  const G = r.levels.length;
  const rows = r.levels.map((l, g) => {
    const oe = r.observed[g]! - r.expected[g]!;
    return [`${r.group}=${l}`, r.n[g]!, r.observed[g]!, num(r.expected[g]), num((oe * oe) / r.expected[g]!), num((oe * oe) / r.variance[g * G + g]!)];
  });
  return {
    text: `${table(['group', 'N', 'observed', 'expected', '(O-E)^2/E', '(O-E)^2/V'], rows)}\nchisq = ${num(r.chisq)} on ${r.df} df, p = ${pval(r.p)}${r.strata === 'site' ? ' (stratified by site)' : ''}`,
    csv: { [`${name}.csv`]: csvOf(['group', 'n', 'observed', 'expected', 'chisq', 'df', 'p'], r.levels.map((l, g) => [l, r.n[g]!, r.observed[g]!, r.expected[g]!, r.chisq, r.df, r.p])) },
    svg: {},
  };
}

function coxReport(name: string, r: CoxResult): Report {
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
  return {
    text: `${table(['covariate', 'coef', 'HR', `${conf} lower`, `${conf} upper`, 'se(coef)', 'z', 'p'], rows)}\n${notes.join('\n')}`,
    csv: { [`${name}.csv`]: csvOf(['covariate', 'coef', 'hazard_ratio', 'lower', 'upper', 'se', 'z', 'p'], r.names.map((n, j) => [n, r.coef[j]!, r.hazardRatio[j]!, r.lower[j]!, r.upper[j]!, r.se[j]!, r.z[j]!, r.p[j]!])) },
    svg: { [`${name}.svg`]: forestSvg({ title: `Cox model: hazard ratios (${conf} CI)`, rows: r.names.map((n, j) => ({ label: n, estimate: r.hazardRatio[j]!, lower: r.lower[j]!, upper: r.upper[j]!, note: `p = ${pval(r.p[j]!)}` })), xLabel: `hazard ratio (${conf} CI, log scale)` }) },
  };
}
