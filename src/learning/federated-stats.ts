/**
 * Federated column statistics: each site reports n, Σx and Σx² of its training columns (never
 * rows); the coordinator adds the reports and derives the global mean and std, so every site can
 * normalise with the same statistics as if the data were pooled.
 */
/** What one site reports. JSON-safe (plain numbers), so it travels as-is. */
export interface ColumnSums {
  n: number;
  sum: number[];
  sumSq: number[];
}

export interface NormStats {
  mean: number[];
  std: number[];
}

/** Adds sites' sums; refuses reports of different widths or malformed numbers. */
export function combineSums(list: readonly ColumnSums[]): ColumnSums {
  if (list.length === 0) throw new Error('combineSums: no site reported');
  const d = list[0]!.sum.length;
  const out: ColumnSums = { n: 0, sum: new Array<number>(d).fill(0), sumSq: new Array<number>(d).fill(0) };
  list.forEach((s, k) => {
    if (!(Number.isInteger(s.n) && s.n >= 0)) throw new Error(`combineSums: report ${k} has a bad row count ${s.n}`);
    if (s.sum.length !== d || s.sumSq.length !== d) throw new Error(`combineSums: report ${k} has ${s.sum.length} columns, expected ${d}`);
    for (let j = 0; j < d; j++) {
      if (!Number.isFinite(s.sum[j]!) || !(s.sumSq[j]! >= 0) || !Number.isFinite(s.sumSq[j]!)) throw new Error(`combineSums: report ${k} column ${j} is not finite`);
      out.sum[j]! += s.sum[j]!;
      out.sumSq[j]! += s.sumSq[j]!;
    }
    out.n += s.n;
  });
  return out;
}

/** Mean and std (ddof 1 by default, the unbiased estimate FLamby uses). */
export function statsFromSums(s: ColumnSums, ddof = 1): NormStats {
  if (s.n - ddof <= 0) throw new Error(`statsFromSums: ${s.n} rows are too few for a std with ddof ${ddof}`);
  const mean = s.sum.map((v) => v / s.n);
  // Clamp: rounding can make a constant column's variance a tiny negative number.
  const std = s.sumSq.map((q, j) => Math.sqrt(Math.max(0, (q - s.sum[j]! * mean[j]!) / (s.n - ddof))));
  return { mean, std };
}

