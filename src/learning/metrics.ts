/**
 * Binary-classification metrics. Probabilities in, labels 0/1.
 * Accuracy uses the strict threshold p > 0.5, as FLamby's metric does.
 */

export function accuracy(p: ArrayLike<number>, y: ArrayLike<number>): number {
  checkLengths(p, y);
  if (p.length === 0) return NaN;
  let ok = 0;
  for (let i = 0; i < p.length; i++) if ((p[i]! > 0.5 ? 1 : 0) === (y[i]! > 0.5 ? 1 : 0)) ok++;
  return ok / p.length;
}

/**
 * Area under the ROC curve via the Mann–Whitney statistic with average ranks, so tied
 * scores count one half (the same value sklearn's roc_auc_score gives). NaN when only one
 * class is present, because the AUC is undefined there.
 */
export function rocAuc(p: ArrayLike<number>, y: ArrayLike<number>): number {
  checkLengths(p, y);
  const n = p.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => p[a]! - p[b]!);
  let nPos = 0;
  for (let i = 0; i < n; i++) if (y[i]! > 0.5) nPos++;
  const nNeg = n - nPos;
  if (nPos === 0 || nNeg === 0) return NaN;
  let rankSumPos = 0;
  for (let i = 0; i < n; ) {
    let j = i;
    while (j + 1 < n && p[order[j + 1]!] === p[order[i]!]) j++;
    const avgRank = (i + j) / 2 + 1; // 1-based average rank of the tie group
    for (let k = i; k <= j; k++) if (y[order[k]!]! > 0.5) rankSumPos += avgRank;
    i = j + 1;
  }
  return (rankSumPos - (nPos * (nPos + 1)) / 2) / (nPos * nNeg);
}

/** Mean binary log-loss; probabilities are clipped to [eps, 1−eps] so it stays finite. */
export function logLoss(p: ArrayLike<number>, y: ArrayLike<number>, eps = 1e-15): number {
  checkLengths(p, y);
  if (p.length === 0) return NaN;
  let s = 0;
  for (let i = 0; i < p.length; i++) {
    const q = Math.min(1 - eps, Math.max(eps, p[i]!));
    s -= y[i]! > 0.5 ? Math.log(q) : Math.log(1 - q);
  }
  return s / p.length;
}

export function binaryMetrics(p: ArrayLike<number>, y: ArrayLike<number>): { accuracy: number; auc: number; logLoss: number } {
  return { accuracy: accuracy(p, y), auc: rocAuc(p, y), logLoss: logLoss(p, y) };
}

function checkLengths(p: ArrayLike<number>, y: ArrayLike<number>): void {
  if (p.length !== y.length) throw new Error(`metrics: ${p.length} predictions but ${y.length} labels`);
}
