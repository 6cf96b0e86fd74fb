/**
 * Normalisation statistics, per site or federated.
 *
 * Federated ('global') normalisation never moves a row: each site reports, for its training
 * rows, n and per column Σx and Σx²; the coordinator adds them up; mean and std follow. The
 * same three functions compute a site's own statistics, so 'site' and 'global' differ only in
 * which sums go into `statsFromSums`.
 *
 * Precision: sums are float64 and the variance is (Σx² − (Σx)²/n)/(n − ddof), which loses
 * about log10(mean²/var) of float64's 16 digits — harmless for clinical measurements.
 */
import type { Dataset } from '../../learning/types.js';

export { combineSums, statsFromSums, type ColumnSums, type NormStats } from '../../learning/federated-stats.js';
import type { ColumnSums, NormStats } from '../../learning/federated-stats.js';

/**
 * A site's report. Sums of one row are that row, and Σx, Σx² of two rows give both values, so
 * fewer than `minRows` (default 3) rows are refused. The sums are plain numbers: a study that
 * must hide even one site's sums can send them through SecAgg+ so only the total is seen.
 */
export function localSums(ds: Dataset, minRows = 3): ColumnSums {
  const { n, d, x } = ds;
  if (n < minRows) throw new Error(`localSums: ${n} training rows are too few to report sums without revealing rows (minimum ${minRows})`);
  const sum = new Array<number>(d).fill(0), sumSq = new Array<number>(d).fill(0);
  for (let r = 0; r < n; r++) {
    for (let j = 0; j < d; j++) {
      const v = x[r * d + j]!;
      sum[j]! += v;
      sumSq[j]! += v * v;
    }
  }
  return { n, sum, sumSq };
}

/**
 * A copy of `ds` with x' = (x − mean) / (std + epsilon) on the columns where `mask` is true
 * (all columns when absent). Computed in float64, stored as float32; with `arithmetic` 'float32'
 * the statistics and each step are rounded to float32, as PyTorch float32 tensors compute it.
 */
export function applyStats(ds: Dataset, stats: NormStats, mask?: readonly boolean[], epsilon = 1e-9, arithmetic: 'float64' | 'float32' = 'float64'): Dataset {
  const { n, d } = ds;
  if (stats.mean.length !== d || stats.std.length !== d) throw new Error(`applyStats: statistics cover ${stats.mean.length} columns, data has ${d}`);
  const x = new Float32Array(ds.x);
  const f = arithmetic === 'float32' ? Math.fround : (v: number) => v;
  for (let j = 0; j < d; j++) {
    if (mask && !mask[j]) continue;
    const m = f(stats.mean[j]!), s = f(f(stats.std[j]!) + epsilon);
    for (let r = 0; r < n; r++) x[r * d + j] = f(ds.x[r * d + j]! - m) / s;
  }
  return { ...ds, x };
}
