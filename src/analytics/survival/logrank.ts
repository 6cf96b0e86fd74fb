/**
 * The log-rank test from pooled per-group risk tables, as R's survdiff (rho = 0): at every time of a
 * stratum, with n = Σ_g n_g and d = Σ_g d_g, E_g += d·n_g/n and
 * V_gh += d (n − d)/(n − 1) · (n_g/n) (δ_gh − n_h/n); O, E and V add over strata. The statistic is
 * (O − E)ᵀ V⁻¹ (O − E) over the groups with E > 0 less the first, on that many degrees of freedom.
 */
import { chiSquareSf } from '../distributions.js';
import { choleskySolve, cholesky } from '../linalg.js';
import type { PooledTable } from './risk-table.js';
import type { LogRankResult } from '../results.js';
export type { LogRankResult } from '../results.js';


/** `strata[s][g]`: the pooled risk table of group g in stratum s (poolTables of the sites' tables in it). */
export function logRank(levels: string[], strata: ReadonlyArray<ReadonlyArray<PooledTable>>): LogRankResult {
  const G = levels.length;
  const observed = new Array<number>(G).fill(0), expected = new Array<number>(G).fill(0), variance = new Array<number>(G * G).fill(0), n = new Array<number>(G).fill(0);
  let exactUntil = Infinity;
  for (const pooled of strata) {
    for (const p of pooled) exactUntil = Math.min(exactUntil, p.exactUntil);
    const times = [...new Set(pooled.flatMap((p) => p.times))].sort((a, b) => a - b);
    // n_g(t) and d_g(t) on the stratum's common times.
    const at = pooled.map((p) => {
      const nt = new Array<number>(times.length).fill(0), dt = new Array<number>(times.length).fill(0);
      let k = 0;
      times.forEach((u, i) => {
        while (k < p.times.length && p.times[k]! < u) k++;
        if (k >= p.times.length) return;
        nt[i] = p.atRisk[k]!;
        if (p.times[k] === u) dt[i] = p.events[k]!;
      });
      return { nt, dt };
    });
    pooled.forEach((p, g) => (n[g]! += p.atRisk[0] ?? 0));
    times.forEach((_, i) => {
      const nTot = at.reduce((a, x) => a + x.nt[i]!, 0), dTot = at.reduce((a, x) => a + x.dt[i]!, 0);
      if (dTot === 0 || nTot === 0) return;
      for (let g = 0; g < G; g++) {
        observed[g]! += at[g]!.dt[i]!;
        expected[g]! += (dTot * at[g]!.nt[i]!) / nTot;
      }
      if (nTot < 2) return;
      const f = (dTot * (nTot - dTot)) / (nTot - 1);
      for (let g = 0; g < G; g++) {
        const pg = at[g]!.nt[i]! / nTot;
        for (let h = 0; h < G; h++) variance[g * G + h]! += f * pg * ((g === h ? 1 : 0) - at[h]!.nt[i]! / nTot);
      }
    });
  }
  const use = expected.map((e, g) => (e > 0 ? g : -1)).filter((g) => g >= 0);
  let chisq = 0;
  if (use.length >= 2) {
    const idx = use.slice(1), p = idx.length;
    const diff = idx.map((g) => observed[g]! - expected[g]!);
    const v = idx.flatMap((g) => idx.map((h) => variance[g * G + h]!));
    const x = choleskySolve(cholesky(v, p), p, diff);
    chisq = x.reduce((a, xi, i) => a + xi * diff[i]!, 0);
  }
  const df = use.length - 1;
  return { levels, n, observed, expected, variance, chisq, df, p: df > 0 ? chiSquareSf(chisq, df) : NaN, exactUntil };
}
