/**
 * Kaplan–Meier curves from pooled risk tables, as R's survfit computes them (stype 1, ctype 1):
 * S(t) = Π_{u ≤ t} (1 − d/n); std.err = √Σ d/(n(n − d)), the Greenwood standard error of log S (what
 * survfit reports); confidence intervals by survfit's 'log' (default), 'log-log' or 'plain'
 * transform; the median by survfit's rule, including its midpoint convention where the curve sits
 * exactly on 0.5, and its confidence limits from the interval curves.
 */
import { normalQuantile } from '../distributions.js';
import type { PooledTable } from './risk-table.js';
import type { KmCurve } from '../results.js';
export type { KmCurve } from '../results.js';


export function kaplanMeier(t: PooledTable, confLevel = 0.95, confType: KmCurve['confType'] = 'log'): KmCurve {
  const z = normalQuantile(1 - (1 - confLevel) / 2);
  const surv: number[] = [], stdErr: number[] = [], lower: number[] = [], upper: number[] = [];
  let s = 1, v = 0;
  t.times.forEach((_, i) => {
    const n = t.atRisk[i]!, d = t.events[i]!;
    if (d > 0) {
      s *= 1 - d / n;
      v += d / (n * (n - d));
    }
    const se = Math.sqrt(v);
    surv.push(s);
    stdErr.push(se);
    const [lo, hi] = confidence(s, se, z, confType);
    lower.push(lo);
    upper.push(hi);
  });
  const curve = {
    time: [...t.times], nRisk: [...t.atRisk], nEvent: [...t.events], nCensor: [...t.censored], surv, stdErr, lower, upper,
    n: t.atRisk[0] ?? 0, events: t.events.reduce((a, b) => a + b, 0), confLevel, confType, exactUntil: t.exactUntil,
  };
  return { ...curve, median: survMedian(curve) };
}

/** survfit_confint for se on the log scale (logse = TRUE), ulimit = TRUE. */
function confidence(p: number, se: number, z: number, type: KmCurve['confType']): [number, number] {
  if (type === 'plain') {
    const se2 = se * p * z;
    return [Math.max(p - se2, 0), Math.min(p + se2, 1)];
  }
  if (type === 'log') {
    if (p === 0) return [NaN, NaN];
    const se2 = z * se;
    return [Math.exp(Math.log(p) - se2), Math.min(Math.exp(Math.log(p) + se2), 1)];
  }
  if (p === 0 || p === 1) return [NaN, NaN];
  const se2 = (z * se) / Math.log(p);
  return [Math.exp(-Math.exp(Math.log(-Math.log(p)) - se2)), Math.exp(-Math.exp(Math.log(-Math.log(p)) + se2))];
}

const TOL = Math.sqrt(2.220446049250313e-16);

/**
 * survival:::survmean's `minmin`, the median that print(survfit) and summary(survfit)$table report:
 * the first time the curve is below 0.5 (within √eps); when it sits exactly on 0.5 there and drops
 * later, the midpoint between that time and the time of the drop. NaN when it never gets there.
 */
function minmin(curve: readonly number[], time: readonly number[]): number {
  const keep = curve.map((y, i) => [y, time[i]!] as const).filter(([y]) => !Number.isNaN(y) && y < 0.5 + TOL);
  if (keep.length === 0) return NaN;
  const [y1, x1] = keep[0]!;
  if (Math.abs(y1 - 0.5) < TOL) {
    const drop = keep.find(([y]) => y < y1);
    if (drop) return (x1 + drop[1]) / 2;
  }
  return x1;
}

/** Median survival and its confidence limits (where the interval curves cross 0.5), as survfit reports them. */
export function survMedian(c: Pick<KmCurve, 'time' | 'surv' | 'lower' | 'upper'>): { estimate: number; lower: number; upper: number } {
  return { estimate: minmin(c.surv, c.time), lower: minmin(c.lower, c.time), upper: minmin(c.upper, c.time) };
}
