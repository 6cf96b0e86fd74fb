/**
 * Survival metrics and Cox survival curves on R's `lung` (complete cases of age, sex, ph.ecog), against R:
 * - the Breslow survival curves S(t | x) of a Breslow coxph fit: survfit.coxph (R's own code);
 * - Uno's C: R's concordance(timewt = "n/G2") (R's own code), with and without a horizon τ (ymax);
 * - time-dependent AUC, Brier scores and their integral: no implementation is installed here
 *   (scikit-survival, timeROC and pec are not), so R computes them in this test by brute force straight
 *   from the papers' formulas, with G from R's survfit on the censoring indicator (censorings tied with
 *   events shifted after them, as survival::brier does) and S(t | x) from survfit.coxph.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseKeyed, rSkipReason, runR } from '../testing/oracles.js';
import { breslowBaseline, cumulativeHazardAt, survivalMatrix } from './models/cox-baseline.js';
import { brierScores, censoringAt, censoringKm, integratedBrierScore, timeDependentAuc, unoC } from './survival-metrics.js';

const TIMES = [90, 180, 270, 365, 450, 540, 730];

const R = `library(survival)
p <- function(key, v) cat(key, sprintf("%.17g", as.numeric(v)), "\\n")
d <- na.omit(lung[, c("time", "status", "age", "sex", "ph.ecog")]); d$status <- d$status - 1
f <- coxph(Surv(time, status) ~ age + sex + ph.ecog, data = d, ties = "breslow")
lp <- as.numeric(as.matrix(d[, c("age", "sex", "ph.ecog")]) %*% coef(f))
times <- c(${TIMES.join(', ')})
S <- t(summary(survfit(f, newdata = d), times = times, extend = TRUE)$surv)
mind <- min(diff(sort(unique(d$time))))
g <- survfit(Surv(d$time + ifelse(d$status == 0, mind / 2, 0), 1 - d$status) ~ 1)
G <- function(t) { i <- findInterval(t, g$time); ifelse(i == 0, 1, g$surv[pmax(i, 1)]) }
p("time", d$time); p("status", d$status); p("lp", lp); p("S", as.vector(t(S)))
p("uno", concordance(Surv(time, status) ~ lp, data = d, timewt = "n/G2", reverse = TRUE)$concordance)
p("uno730", concordance(Surv(time, status) ~ lp, data = d, timewt = "n/G2", reverse = TRUE, ymax = 730)$concordance)
p("harrell", concordance(Surv(time, status) ~ lp, data = d, reverse = TRUE)$concordance)
auc <- sapply(times, function(t) {
  cases <- d$time <= t & d$status == 1; ctrl <- d$time > t; w <- 1 / G(d$time[cases])
  cmp <- outer(lp[cases], lp[ctrl], ">") + 0.5 * outer(lp[cases], lp[ctrl], "==")
  sum(w * rowSums(cmp)) / (sum(w) * sum(ctrl)) })
p("auc", auc)
bs <- sapply(seq_along(times), function(k) { t <- times[k]; s <- S[, k]
  ev <- d$time <= t & d$status == 1; alive <- d$time > t
  sum(ifelse(ev, s^2 / G(d$time), 0) + ifelse(alive, (1 - s)^2 / G(t + mind / 2), 0)) / nrow(d) })
p("brier", bs); p("ibs", sum(diff(times) * (head(bs, -1) + tail(bs, -1)) / 2) / (max(times) - min(times)))
p("G", G(times + mind / 2))
`;

test('Cox survival curves, Uno\'s C, time-dependent AUC and the (integrated) Brier score equal R on lung', { skip: rSkipReason() }, () => {
  const r = parseKeyed(runR(R));
  const get = (k: string) => r.get(k) ?? assert.fail(`R printed no ${k}`);
  const d = { time: get('time'), event: get('status') };
  const lp = get('lp'), S = get('S');
  const close = (name: string, got: readonly number[], want: readonly number[], tol: number) => {
    assert.equal(got.length, want.length, name);
    got.forEach((g, i) => assert.ok(Math.abs(g - want[i]!) <= tol * Math.max(1, Math.abs(want[i]!)), `${name}[${i}]: ${g} vs R ${want[i]}`));
  };

  const base = breslowBaseline(lp, d.time, d.event);
  close('S(t|x)', Array.from(survivalMatrix(base, lp, TIMES)), S, 1e-10);
  assert.equal(cumulativeHazardAt(base, 0), 0);

  close('G(t)', TIMES.map((t) => censoringAt(censoringKm(d), t)), get('G'), 1e-12);
  close("Uno's C", [unoC(lp, d)], get('uno'), 1e-12);
  close("Uno's C, τ = 730", [unoC(lp, d, { tau: 730 })], get('uno730'), 1e-12);
  close('AUC(t)', timeDependentAuc(lp, d, TIMES), get('auc'), 1e-12);
  const bs = brierScores(S, d, TIMES);
  close('BS(t)', bs, get('brier'), 1e-12);
  close('IBS', [integratedBrierScore(TIMES, bs)], get('ibs'), 1e-12);
  // Uno's C differs from Harrell's on censored data (the point of the weights).
  assert.ok(Math.abs(unoC(lp, d) - get('harrell')[0]!) > 1e-4);
});

test('metrics refuse mismatched inputs', () => {
  assert.throws(() => unoC([1, 2], { time: [1], event: [1] }), /2 predictions for 1 times/);
  assert.throws(() => brierScores([0.5], { time: [1, 2], event: [1, 0] }, [1]), /1 predictions for 2 rows × 1 times/);
  assert.throws(() => integratedBrierScore([1], [0.1]), /at least two times/);
});
