/**
 * Federated survival analysis on R's `lung` (NCCTG lung cancer trial) split by institution (`inst`,
 * 18 sites), against R's survival package on the pooled rows: coxph (Breslow and Efron, with and
 * without strata(inst)), survfit (overall, by sex, per institution) and survdiff (by sex, with and
 * without strata(inst)). The data and every expected number come from Rscript in this test.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseKeyed, rSkipReason, runR } from '../../testing/oracles.js';
import { LUNG_EXPORT, LUNG_SCHEMA, lungTables, relClose, siteInputs } from '../testing.js';
import { runQuery, type KmResult, type LogRankQueryResult } from '../query.js';
import type { CoxResult } from './cox.js';
import type { KmCurve } from './km.js';
import type { AnalyticsPolicy } from '../spec.js';

const skip = rSkipReason();
// The oracle tests need every row of every site: a minimum of 1 turns the guard off (the guard has its own tests).
const OPEN: AnalyticsPolicy = { minCellCount: 1, allowRiskSetSums: true };

const R_SCRIPT = `${LUNG_EXPORT}
p <- function(key, v) cat(key, sprintf("%.17g", as.numeric(v)), "\\n")
for (ties in c("breslow", "efron")) for (st in c("none", "site")) {
  f <- if (st == "site") coxph(Surv(time, status) ~ age + sex + ph.ecog + strata(inst), data = d, ties = ties) else
    coxph(Surv(time, status) ~ age + sex + ph.ecog, data = d, ties = ties)
  s <- summary(f); k <- paste(ties, st, sep = ".")
  p(paste0(k, ".coef"), coef(f)); p(paste0(k, ".se"), sqrt(diag(vcov(f)))); p(paste0(k, ".p"), s$coefficients[, 5])
  p(paste0(k, ".loglik"), f$loglik); p(paste0(k, ".lr"), s$logtest)
  p(paste0(k, ".wald"), c(f$wald.test, 3, pchisq(f$wald.test, 3, lower.tail = FALSE))); p(paste0(k, ".score"), c(f$score, 3, pchisq(f$score, 3, lower.tail = FALSE)))
  p(paste0(k, ".n"), c(f$n, f$nevent))
}
curve <- function(k, f) {
  p(paste0(k, ".time"), f$time); p(paste0(k, ".nrisk"), f$n.risk); p(paste0(k, ".nevent"), f$n.event); p(paste0(k, ".ncensor"), f$n.censor)
  p(paste0(k, ".surv"), f$surv); p(paste0(k, ".stderr"), f$std.err); p(paste0(k, ".lower"), f$lower); p(paste0(k, ".upper"), f$upper)
  t <- summary(f)$table; p(paste0(k, ".median"), t[c("median", "0.95LCL", "0.95UCL")])
}
for (ct in c("log", "log-log", "plain")) curve(paste0("km.", ct), survfit(Surv(time, status) ~ 1, data = d, conf.type = ct))
fs <- survfit(Surv(time, status) ~ sex, data = d)
for (i in 1:2) curve(paste0("km.sex", i), fs[i])
fi <- survfit(Surv(time, status) ~ inst, data = d)
insts <- sort(unique(d$inst))
for (i in seq_along(insts)) curve(paste0("km.inst", insts[i]), fi[i])
for (st in c("none", "site")) {
  s <- if (st == "site") survdiff(Surv(time, status) ~ sex + strata(inst), data = d) else survdiff(Surv(time, status) ~ sex, data = d)
  k <- paste0("lr.", st)
  p(paste0(k, ".chisq"), s$chisq); p(paste0(k, ".p"), s$pvalue); p(paste0(k, ".obs"), if (is.matrix(s$obs)) rowSums(s$obs) else s$obs)
  p(paste0(k, ".exp"), if (is.matrix(s$exp)) rowSums(s$exp) else s$exp); p(paste0(k, ".var"), s$var)
}
`;

function closeAll(name: string, got: readonly number[], want: readonly number[] | undefined, tol: number, floor = 1e-300): void {
  assert.ok(want, `R printed no ${name}`);
  assert.equal(got.length, want.length, `${name}: ${got.length} values, R has ${want.length}`);
  got.forEach((g, i) => assert.ok(relClose(g, want[i]!, tol, floor), `${name}[${i}]: Setu ${g}, R ${want[i]} (relative difference ${Math.abs(g - want[i]!) / Math.abs(want[i]!)})`));
}

function checkCurve(k: string, c: KmCurve, r: Map<string, number[]>): void {
  closeAll(`${k}.time`, c.time, r.get(`${k}.time`), 0);
  closeAll(`${k}.nrisk`, c.nRisk, r.get(`${k}.nrisk`), 0);
  closeAll(`${k}.nevent`, c.nEvent, r.get(`${k}.nevent`), 0);
  closeAll(`${k}.ncensor`, c.nCensor, r.get(`${k}.ncensor`), 0);
  closeAll(`${k}.surv`, c.surv, r.get(`${k}.surv`), 1e-9);
  closeAll(`${k}.stderr`, c.stdErr, r.get(`${k}.stderr`), 1e-9);
  closeAll(`${k}.lower`, c.lower, r.get(`${k}.lower`), 1e-9);
  closeAll(`${k}.upper`, c.upper, r.get(`${k}.upper`), 1e-9);
  closeAll(`${k}.median`, [c.median.estimate, c.median.lower, c.median.upper], r.get(`${k}.median`), 1e-9);
}

test('federated survival on lung split by institution equals R survival on the pooled rows', { skip }, async (t) => {
  const r = parseKeyed(runR(R_SCRIPT));
  const { sites } = lungTables();
  assert.equal(Object.keys(sites).length, 18);
  const inputs = siteInputs(sites, LUNG_SCHEMA, OPEN);

  for (const ties of ['breslow', 'efron'] as const) {
    for (const strata of ['none', 'site'] as const) {
      await t.test(`coxph ${ties}, strata ${strata}`, () => {
        const run = runQuery({ kind: 'cox', covariates: ['age', 'sex', 'ph.ecog'], ties, strata }, inputs);
        const fit = run.result as CoxResult;
        const k = `${ties}.${strata}`;
        assert.ok(fit.converged);
        assert.deepEqual(fit.names, ['age', 'sex=2', 'ph.ecog']);
        closeAll(`${k}.coef`, fit.coef, r.get(`${k}.coef`), 1e-6);
        closeAll(`${k}.se`, fit.se, r.get(`${k}.se`), 1e-6);
        closeAll(`${k}.p`, fit.p, r.get(`${k}.p`), 1e-6);
        closeAll(`${k}.loglik`, fit.loglik, r.get(`${k}.loglik`), 1e-9);
        closeAll(`${k}.lr`, [fit.likelihoodRatio.statistic, fit.likelihoodRatio.df, fit.likelihoodRatio.p], r.get(`${k}.lr`), 1e-6);
        closeAll(`${k}.wald`, [fit.wald.statistic, fit.wald.df, fit.wald.p], r.get(`${k}.wald`), 1e-6);
        closeAll(`${k}.score`, [fit.score.statistic, fit.score.df, fit.score.p], r.get(`${k}.score`), 1e-6);
        closeAll(`${k}.n`, [fit.n, fit.events], r.get(`${k}.n`), 0);
        // Hazard ratios and their interval follow from coef and se.
        fit.hazardRatio.forEach((h, j) => assert.ok(relClose(h, Math.exp(r.get(`${k}.coef`)![j]!), 1e-6)));
        // One round per Newton evaluation, every site in each.
        assert.ok(run.rounds.length >= 3 && run.rounds.every((a) => Object.keys(a).length === 18));
      });
    }
  }

  await t.test('survfit overall (log, log-log, plain), by sex and per institution', () => {
    for (const confType of ['log', 'log-log', 'plain'] as const) {
      const km = runQuery({ kind: 'kaplan-meier', confType }, inputs).result as KmResult;
      checkCurve(`km.${confType}`, km.overall, r);
    }
    const bySex = runQuery({ kind: 'kaplan-meier', by: 'sex' }, inputs).result as KmResult;
    checkCurve('km.sex1', bySex.groups[0]!, r);
    checkCurve('km.sex2', bySex.groups[1]!, r);
    checkCurve('km.log', bySex.overall, r);
    for (const [inst, c] of Object.entries(bySex.sites)) checkCurve(`km.inst${inst}`, c.overall!, r);
  });

  await t.test('survdiff by sex, unstratified and stratified by institution', () => {
    for (const strata of ['none', 'site'] as const) {
      const lr = runQuery({ kind: 'log-rank', group: 'sex', strata }, inputs).result as LogRankQueryResult;
      const k = `lr.${strata}`;
      closeAll(`${k}.chisq`, [lr.chisq], r.get(`${k}.chisq`), 1e-9);
      closeAll(`${k}.p`, [lr.p], r.get(`${k}.p`), 1e-9);
      closeAll(`${k}.obs`, lr.observed, r.get(`${k}.obs`), 0);
      closeAll(`${k}.exp`, lr.expected, r.get(`${k}.exp`), 1e-9);
      closeAll(`${k}.var`, lr.variance, r.get(`${k}.var`), 1e-9);
    }
  });
});
