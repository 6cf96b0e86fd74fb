/**
 * Harrell's concordance index for right-censored survival data.
 *
 * A pair (i, j) is comparable when i's event was observed and i left the study first:
 * t_i < t_j, or t_i = t_j with j censored (an event and a censoring at the same time count the
 * event as first, the convention of R's `survival` and of lifelines, which FLamby uses). Two
 * events at the same time are not comparable. The pair is concordant when the model gives i
 * the higher risk, and counts one half when the risks tie.
 *
 * C = (concordant + ½ tied) / comparable. Runs in O(n log n): rows are visited from the
 * latest time down while a Fenwick tree over risk ranks counts the rows already seen.
 */

export interface Concordance {
  /** NaN when there is no comparable pair (e.g. no observed event), as the index is undefined. */
  cIndex: number;
  comparable: number;
  concordant: number;
  tiedRisk: number;
}

export function concordance(risk: ArrayLike<number>, time: ArrayLike<number>, event: ArrayLike<number>): Concordance {
  const n = risk.length;
  if (time.length !== n || event.length !== n) throw new Error(`cIndex: ${n} risks, ${time.length} times and ${event.length} events must have equal length`);
  for (let i = 0; i < n; i++) {
    if (Number.isNaN(risk[i]!)) throw new Error(`cIndex: risk score of row ${i} is NaN`);
    if (Number.isNaN(time[i]!)) throw new Error(`cIndex: time of row ${i} is NaN`);
  }
  // Dense ranks of the risk scores, 1-based for the Fenwick tree.
  const byRisk = Array.from({ length: n }, (_, i) => i).sort((a, b) => risk[a]! - risk[b]! || a - b);
  const rank = new Int32Array(n);
  let distinct = 0;
  for (let k = 0; k < n; k++) {
    if (k === 0 || risk[byRisk[k]!]! !== risk[byRisk[k - 1]!]!) distinct++;
    rank[byRisk[k]!] = distinct;
  }
  const tree = new Float64Array(distinct + 1);
  const add = (r: number): void => {
    for (; r <= distinct; r += r & -r) tree[r]! += 1;
  };
  const below = (r: number): number => {
    let s = 0;
    for (; r > 0; r -= r & -r) s += tree[r]!;
    return s;
  };

  const byTimeDesc = Array.from({ length: n }, (_, i) => i).sort((a, b) => time[b]! - time[a]!);
  let comparable = 0, concordant = 0, tiedRisk = 0, seen = 0;
  for (let g = 0; g < n; ) {
    let h = g;
    while (h + 1 < n && time[byTimeDesc[h + 1]!] === time[byTimeDesc[g]!]) h++;
    // Censored rows at this time outlive the events at this time: insert them first.
    for (let k = g; k <= h; k++) {
      const i = byTimeDesc[k]!;
      if (!(event[i]! > 0.5)) {
        add(rank[i]!);
        seen++;
      }
    }
    for (let k = g; k <= h; k++) {
      const i = byTimeDesc[k]!;
      if (!(event[i]! > 0.5)) continue;
      const lower = below(rank[i]! - 1), atOrBelow = below(rank[i]!);
      comparable += seen;
      concordant += lower;
      tiedRisk += atOrBelow - lower;
    }
    for (let k = g; k <= h; k++) {
      const i = byTimeDesc[k]!;
      if (event[i]! > 0.5) {
        add(rank[i]!);
        seen++;
      }
    }
    g = h + 1;
  }
  return { cIndex: comparable > 0 ? (concordant + 0.5 * tiedRisk) / comparable : NaN, comparable, concordant, tiedRisk };
}

/** Harrell's C of risk scores (higher = earlier event expected); NaN without comparable pairs. */
export function cIndex(risk: ArrayLike<number>, time: ArrayLike<number>, event: ArrayLike<number>): number {
  return concordance(risk, time, event).cIndex;
}
