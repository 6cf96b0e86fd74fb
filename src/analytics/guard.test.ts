/**
 * The minimum-count guard, checked on what a coordinator receives (every answer of every round), and
 * what the guarded results mean: a survival answer stops where a site's risk set falls below its
 * minimum, and the federated result equals R's on the data with each site's remaining subjects
 * censored at its last released time (Cox with site strata: without the sites too small to answer).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { defaultHeartDir } from '../site/data/heart.js';
import type { CsvTable } from '../site/data/csv.js';
import { parseKeyed, rSkipReason, runR } from '../testing/oracles.js';
import { runQuery, type KmResult, type QueryRun } from './query.js';
import type { CountResult } from './statistics.js';
import type { CoxResult } from './survival/cox.js';
import { HEART_STATS_SCHEMA, heartTables, LUNG_SCHEMA, lungTables, relClose, siteInputs } from './testing.js';
import type { QuerySpec } from './spec.js';

/** Every count-like number anywhere in the answers a coordinator received (inspected without the project's own checks). */
function receivedCounts(run: QueryRun): number[] {
  const out: number[] = [];
  const walk = (v: unknown, key: string): void => {
    if (Array.isArray(v)) v.forEach((x) => walk(x, key));
    else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) walk(x, k);
    else if (typeof v === 'number' && ['counts', 'atRisk', 'n', 'missing', 'present', 'total'].includes(key)) out.push(v);
  };
  for (const r of run.rounds) walk(JSON.parse(JSON.stringify(r)), '');
  return out;
}

test('nothing from 1 to k−1 leaves a heart hospital, whatever is asked', () => {
  for (const k of [5, 11]) {
    const sites = siteInputs(heartTables(defaultHeartDir()), HEART_STATS_SCHEMA, { minCellCount: k });
    const queries: QuerySpec[] = [
      { kind: 'count' }, { kind: 'count', by: ['cp', 'restecg', 'fbs'] }, { kind: 'count', by: ['sex', 'thal'] },
      { kind: 'summary', column: 'chol', by: 'restecg', statistics: ['mean', 'sd', 'min', 'max'] },
      { kind: 'histogram', column: 'oldpeak', range: [-3, 7], bins: 40 }, { kind: 'missingness' },
    ];
    for (const q of queries) {
      const run = runQuery(q, sites);
      const counts = receivedCounts(run);
      assert.ok(counts.length > 0);
      const small = counts.filter((c) => c > 0 && c < k);
      assert.deepEqual(small, [], `${q.kind}${'by' in q ? ` by ${q.by}` : ''}: the coordinator received counts below ${k}`);
    }
    // Suppressed cells are named, and the pooled figure is the sum of what was released.
    const run = runQuery({ kind: 'count', by: ['cp', 'restecg', 'fbs'] }, sites);
    const r = run.result as CountResult;
    assert.ok(r.cells.some((c) => c.suppressedAt.length > 0), 'this cross-tabulation has small cells');
    r.cells.forEach((c, i) => assert.equal(c.count, Object.values(r.sites).reduce((a, s) => a + (s[i] ?? 0), 0)));
  }
});

/** Each site's subjects after its last time with ≥ k at risk, censored at that time (what the guarded answer means); sites under k left out. */
function censorTails(sites: Record<string, CsvTable>, k: number, complete: (r: Array<string | null>, h: string[]) => boolean): CsvTable {
  const h = sites[Object.keys(sites)[0]!]!.header;
  const ti = h.indexOf('time'), si = h.indexOf('status');
  const rows: Array<Array<string | null>> = [];
  for (const t of Object.values(sites)) {
    const mine = t.rows.filter((r) => complete(r, h));
    const times = [...new Set(mine.map((r) => Number(r[ti])))].sort((a, b) => a - b);
    let tau = -Infinity;
    for (const u of times) {
      if (mine.filter((r) => Number(r[ti]) >= u).length < k) break;
      tau = u;
    }
    if (tau === -Infinity) continue; // too small to release anything: the site is not in the answer at all
    for (const r of mine) rows.push(Number(r[ti]) > tau ? r.map((v, j) => (j === ti ? String(tau) : j === si ? '0' : v)) : r);
  }
  return { file: 'censored.csv', header: h, rows, lines: rows.map((_, i) => i + 2) };
}

const toCsv = (t: CsvTable) => [t.header.join(','), ...t.rows.map((r) => r.map((v) => v ?? '').join(','))].join('\n') + '\n';

test('guarded survival answers on lung (k = 10) equal R on the data they describe', { skip: rSkipReason() }, () => {
  const k = 10;
  const { sites } = lungTables();
  const inputs = siteInputs(sites, LUNG_SCHEMA, { minCellCount: k, allowRiskSetSums: true });
  const h = sites['1']!.header;
  const hasCox = (r: Array<string | null>) => ['age', 'sex', 'ph.ecog'].every((c) => r[h.indexOf(c)] !== null);
  const kmData = censorTails(sites, k, () => true), coxData = censorTails(sites, k, hasCox);
  const big = Object.entries(sites).filter(([, t]) => t.rows.filter(hasCox).length >= k).map(([id]) => id);
  const r = parseKeyed(runR(`library(survival)
p <- function(key, v) cat(key, sprintf("%.17g", as.numeric(v)), "\\n")
km <- survfit(Surv(time, status) ~ 1, data = read.csv("km.csv"))
p("surv", km$surv); p("nrisk", km$n.risk); p("lower", km$lower)
cx <- read.csv("cox.csv")
f <- coxph(Surv(time, status) ~ age + sex + ph.ecog, data = cx, ties = "efron"); p("none.coef", coef(f)); p("none.se", sqrt(diag(vcov(f))))
full <- subset(lung, !is.na(inst)); full$status <- full$status - 1
s <- coxph(Surv(time, status) ~ age + sex + ph.ecog + strata(inst), data = subset(full, inst %in% c(${big.join(',')})), ties = "efron")
p("site.coef", coef(s)); p("site.se", sqrt(diag(vcov(s))))
`, { 'km.csv': toCsv(kmData), 'cox.csv': toCsv(coxData) }));

  const kmRun = runQuery({ kind: 'kaplan-meier' }, inputs);
  assert.ok(receivedCounts(kmRun).every((c) => c >= k), 'a released risk set below the minimum');
  const km = (kmRun.result as KmResult).overall;
  assert.ok(Number.isFinite(km.exactUntil), 'some institutions truncated');
  km.surv.forEach((s, i) => assert.ok(relClose(s, r.get('surv')![i]!, 1e-9)));
  assert.deepEqual(km.nRisk, r.get('nrisk'));
  km.lower.forEach((s, i) => assert.ok(relClose(s, r.get('lower')![i]!, 1e-9)));

  const none = runQuery({ kind: 'cox', covariates: ['age', 'sex', 'ph.ecog'], strata: 'none' }, inputs);
  assert.ok(receivedCounts(none).every((c) => c >= k));
  const fit = none.result as CoxResult;
  assert.ok(fit.truncatedSites.length > 0);
  fit.coef.forEach((b, j) => assert.ok(relClose(b, r.get('none.coef')![j]!, 1e-6), `coef ${j}: ${b} vs R ${r.get('none.coef')![j]}`));
  fit.se.forEach((b, j) => assert.ok(relClose(b, r.get('none.se')![j]!, 1e-6)));

  const strat = runQuery({ kind: 'cox', covariates: ['age', 'sex', 'ph.ecog'], strata: 'site' }, inputs);
  const sfit = strat.result as CoxResult;
  assert.deepEqual(sfit.excludedSites.sort(), Object.keys(sites).filter((id) => !big.includes(id)).sort());
  assert.ok(sfit.excludedSites.length > 0);
  // A site below its minimum sends no sums at all, in any round.
  for (const round of strat.rounds) for (const id of sfit.excludedSites) assert.equal((round[id] as { sums: unknown }).sums, null);
  sfit.coef.forEach((b, j) => assert.ok(relClose(b, r.get('site.coef')![j]!, 1e-6)));
  sfit.se.forEach((b, j) => assert.ok(relClose(b, r.get('site.se')![j]!, 1e-6)));
});
