/**
 * An analytics study's queries on its page: each query's status, rounds and refusals (by site, with the reason), its
 * result as a table, the plot that suits it (Kaplan–Meier curves with confidence bands, a forest plot of hazard
 * ratios, a histogram) and downloads as JSON and CSV. The CSV and the plot come from `analytics/export.ts`, the
 * formatter `setu study results --csv/--plot` uses, so the files are the CLI's byte for byte. The plot is shown as an
 * <img> of its SVG document (a data: URL, which the CSP allows for images), never as HTML.
 *
 * Over JSON, NaN and Infinity arrive as null (a KM band's undefined limits): every formatter here takes null.
 */
import type { ComponentChildren } from 'preact';
import type { QueryResultEntry, StudyResults } from '../../protocol/analytics.js';
import type { PooledCell, QueryResult } from '../../analytics/results.js';
import { countRows, histogramLabels, kmCurves, levelName, pval, queryFileName, resultCsv, resultSvg } from '../../analytics/export.js';
import type { Api } from './api.js';
import { fmtNum, t } from './i18n.js';
import { Loaded, saveBlob, useApi } from './common.js';

type N = number | null | undefined;
const num = (v: N, digits = 3) => fmtNum(v ?? null, digits);
const cell = (c: PooledCell) =>
  `${c.noiseSd > 0 ? fmtNum(c.count, 1) : c.count}${c.noiseSd > 0 ? ` ± ${fmtNum(c.noiseSd, 1)}` : ''}${c.suppressedAt.length ? ` ${t('analytics.suppressedAt', { sites: c.suppressedAt.join(', ') })}` : ''}`;

function Table({ head, rows, testId }: { head: string[]; rows: Array<Array<ComponentChildren>>; testId?: string }) {
  return (
    <table class="data analytics-table" data-testid={testId}>
      <thead>
        <tr>{head.map((h) => <th>{h}</th>)}</tr>
      </thead>
      <tbody>
        {rows.map((r) => (
          <tr>{r.map((c, i) => <td class={i ? 'num' : undefined}>{c}</td>)}</tr>
        ))}
      </tbody>
    </table>
  );
}

/** The readable table(s) of one result, headers in the page's language. */
function ResultTable({ r }: { r: QueryResult }) {
  switch (r.kind) {
    case 'count':
      return <Table testId="result-table" head={[...r.by, t('analytics.count')]} rows={countRows(r).map(({ key, c }) => [...key, cell(c)])} />;
    case 'summary':
      return (
        <>
          <p class="muted small">{r.column}</p>
          <Table testId="result-table" head={[r.by ?? '', 'n', t('analytics.mean'), t('analytics.sd'), t('analytics.variance'), t('analytics.min'), t('analytics.max')]} rows={r.groups.map((g) => [r.by ? levelName(g.level) : t('analytics.all'), g.n, num(g.mean), num(g.sd), num(g.variance), num(g.min), num(g.max)])} />
        </>
      );
    case 'histogram': {
      const labels = histogramLabels(r.edges);
      return <Table testId="result-table" head={[`${r.column}: ${t('analytics.bin')}`, t('analytics.count')]} rows={r.cells.map((c, i) => [labels[i]!, cell(c)])} />;
    }
    case 'quantiles':
      return <Table testId="result-table" head={['p', t('analytics.estimate'), t('analytics.lower'), t('analytics.upper')]} rows={r.quantiles.map((q) => [q.prob, num(q.estimate), num(q.lower), num(q.upper)])} />;
    case 'missingness':
      return <Table testId="result-table" head={[t('analytics.column'), t('analytics.missing'), t('analytics.present'), '%']} rows={r.columns.map((c) => [c.column, cell(c.missing), cell(c.present), num(c.fraction === null ? null : 100 * c.fraction, 1)])} />;
    case 'kaplan-meier': {
      const curves = kmCurves(r);
      const conf = `${Math.round(r.overall.confLevel * 100)}%`;
      const medians = curves.map(([label, c]) => [label, c.n, c.events, num(c.median.estimate, 1), num(c.median.lower, 1), num(c.median.upper, 1)]);
      if (r.groups.length) medians.push([t('analytics.all'), r.overall.n, r.overall.events, num(r.overall.median.estimate, 1), num(r.overall.median.lower, 1), num(r.overall.median.upper, 1)]);
      return (
        <>
          <Table testId="result-table" head={[t('analytics.curve'), 'n', t('analytics.events'), t('analytics.median'), `${conf} ${t('analytics.lower')}`, `${conf} ${t('analytics.upper')}`]} rows={medians} />
          <details>
            <summary>{t('analytics.kmTable')}</summary>
            <Table testId="km-table" head={[t('analytics.curve'), t('analytics.time'), t('analytics.atRisk'), t('analytics.events'), t('analytics.censored'), 'S(t)', `${conf} ${t('analytics.lower')}`, `${conf} ${t('analytics.upper')}`]} rows={curves.flatMap(([label, c]) => c.time.map((tm, i) => [label, tm, c.nRisk[i]!, c.nEvent[i]!, c.nCensor[i]!, num(c.surv[i], 4), num(c.lower[i], 4), num(c.upper[i], 4)]))} />
          </details>
        </>
      );
    }
    case 'log-rank': {
      const G = r.levels.length;
      return (
        <>
          <Table testId="result-table" head={[t('analytics.group'), 'N', t('analytics.observed'), t('analytics.expected'), '(O-E)²/E', '(O-E)²/V']} rows={r.levels.map((l, g) => {
            const oe = r.observed[g]! - r.expected[g]!;
            return [`${r.group}=${l}`, r.n[g]!, r.observed[g]!, num(r.expected[g]), num((oe * oe) / r.expected[g]!), num((oe * oe) / r.variance[g * G + g]!)];
          })} />
          <p data-testid="logrank-test">χ² = {num(r.chisq)}, df = {r.df}, p = {pval(r.p)}{r.strata === 'site' ? ` · ${t('analytics.stratifiedBySite')}` : ''}</p>
        </>
      );
    }
    default: {
      const conf = `${Math.round(r.confLevel * 100)}%`;
      return (
        <>
          <Table testId="result-table" head={[t('analytics.covariate'), 'coef', 'HR', `${conf} ${t('analytics.lower')}`, `${conf} ${t('analytics.upper')}`, 'se', 'z', 'p']} rows={r.names.map((n, j) => [n, num(r.coef[j], 4), num(r.hazardRatio[j], 4), num(r.lower[j], 4), num(r.upper[j], 4), num(r.se[j], 4), num(r.z[j], 3), pval(r.p[j]!)])} />
          <p class="muted small" data-testid="cox-tests">
            n = {r.n}, {t('analytics.events')} = {r.events}; ties {r.ties}; {r.strata === 'site' ? t('analytics.stratifiedBySite') : t('analytics.sharedBaseline')};{' '}
            {r.converged ? t('analytics.converged', { n: r.iterations }) : t('analytics.notConverged', { n: r.iterations })}
            <br />
            LR = {num(r.likelihoodRatio.statistic)} (df {r.likelihoodRatio.df}, p = {pval(r.likelihoodRatio.p)}) · Wald = {num(r.wald.statistic)} (df {r.wald.df}, p = {pval(r.wald.p)}) · score = {num(r.score.statistic)} (df {r.score.df}, p = {pval(r.score.p)})
          </p>
        </>
      );
    }
  }
}

function download(name: string, body: string, type: string) {
  saveBlob(new Blob([body], { type }), name);
}

/** The coordinator's record of a refusal starts "site S refused task T: "; the card names the site itself. */
function reasonOnly(site: string, why: string): string {
  const prefix = `site ${site} refused task `;
  return why.startsWith(prefix) && why.indexOf(': ', prefix.length) > 0 ? why.slice(why.indexOf(': ', prefix.length) + 2) : why;
}

function rounds(e: QueryResultEntry): string {
  if (!e.rounds.length) return '';
  const [a, b] = [e.rounds[0]!, e.rounds[e.rounds.length - 1]!];
  return t('analytics.rounds', { rounds: a === b ? String(a) : `${a}–${b}`, n: e.rounds.length });
}

function Query({ e, study }: { e: QueryResultEntry; study: StudyResults }) {
  const name = queryFileName(e);
  const r = e.status === 'done' && e.result !== undefined ? (e.result as QueryResult) : null;
  const csv = r ? Object.entries(resultCsv(name, r)) : [];
  const svg = r ? Object.entries(resultSvg(name, r)) : [];
  return (
    <div class="card analytics-query" data-testid="analytics-query" data-kind={e.kind} data-status={e.status}>
      <h3>
        {e.index + 1}. {e.name ?? e.kind} <span class="muted small">({e.kind})</span> <span class={`status status-${e.status}`} data-testid="query-status">{t(`analytics.status.${e.status}`)}</span> <span class="muted small">{rounds(e)}</span>
      </h3>
      {Object.entries(e.refusals).map(([site, why]) => (
        <div class="notice" data-testid="analytics-refusal" data-site={site}>
          {t('analytics.refused', { site, reason: reasonOnly(site, why) })}
        </div>
      ))}
      {e.error && <div class="notice error">{e.error}</div>}
      {/* The table and its plot side by side where the page is wide enough, one above the other where not. */}
      <div class="analytics-body">
        {r && (
          <div class="analytics-tables">
            <ResultTable r={r} />
          </div>
        )}
        {svg.map(([file, doc]) => (
          <img class="plot" data-testid="analytics-plot" data-file={file} alt={`${e.name ?? e.kind}: ${t('analytics.plot')}`} src={`data:image/svg+xml;charset=utf-8,${encodeURIComponent(doc)}`} />
        ))}
      </div>
      {r && (
        <p>
          <button data-testid="analytics-json" onClick={() => download(`${name}.json`, JSON.stringify({ ...study, queries: [e] }, null, 1) + '\n', 'application/json')}>
            {t('analytics.downloadJson')}
          </button>{' '}
          {csv.map(([file, body]) => (
            <button data-testid="analytics-csv" data-file={file} onClick={() => download(file, body, 'text/csv')}>
              {t('analytics.downloadCsv', { file })}
            </button>
          ))}
        </p>
      )}
    </div>
  );
}

/** The study's queries, refetched whenever `version` moves (the study page bumps it on round.committed). Nothing for a training study. */
export function AnalyticsResults({ api, id, version }: { api: Api; id: string; version: number }) {
  const res = useApi<StudyResults>(api, `/v1/studies/${encodeURIComponent(id)}/results`, version);
  if (res.state === 'ok' && !res.data.queries.length) return null;
  return (
    <Loaded load={res} what="analytics.title">
      {(s) => (
        <section data-testid="analytics">
          <h2>
            {t('analytics.title')} <span class="muted small">{t('analytics.doneOf', { done: s.queries.filter((q) => q.status === 'done').length, n: s.queries.length })}</span>
          </h2>
          {s.queries.map((e) => <Query e={e} study={s} />)}
        </section>
      )}
    </Loaded>
  );
}
