/**
 * Survival curves from a Cox model: Breslow's estimate of the baseline cumulative hazard from the
 * training rows and their risk scores f(x),
 *
 *     H0(t) = Σ_{event times u ≤ t} d(u) / Σ_{j: T_j ≥ u} exp f(x_j),
 *
 * and S(t | x) = exp(−H0(t) · exp f(x)), as R's survfit.coxph gives for a Breslow fit (ctype 1,
 * stype 2). Scores are used as they are: a centred score only rescales H0 and cancels in S.
 */

export interface BaselineHazard {
  /** Distinct event times, ascending. */
  times: number[];
  /** H0 just after each of them, times e^shift: scores are shifted by their maximum so nothing overflows. */
  scaledCumHazard: number[];
  shift: number;
}

export function breslowBaseline(score: ArrayLike<number>, time: ArrayLike<number>, event: ArrayLike<number>): BaselineHazard {
  const n = score.length;
  if (time.length !== n || event.length !== n) throw new Error(`breslow: ${n} scores, ${time.length} times, ${event.length} events`);
  // Shift scores by their maximum so exp cannot overflow; H0 is scaled back at the end.
  let mx = -Infinity;
  for (let i = 0; i < n; i++) mx = Math.max(mx, score[i]!);
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => time[b]! - time[a]!);
  const times: number[] = [], hazard: number[] = [];
  let risk = 0;
  for (let k = 0; k < n; ) {
    const t = time[order[k]!]!;
    let d = 0;
    while (k < n && time[order[k]!] === t) {
      const i = order[k]!;
      risk += Math.exp(score[i]! - mx);
      if (event[i]! > 0.5) d++;
      k++;
    }
    if (d > 0) {
      times.push(t);
      hazard.push(d / risk);
    }
  }
  times.reverse();
  hazard.reverse();
  let h = 0;
  return { times, scaledCumHazard: hazard.map((v) => (h += v)), shift: mx };
}

/** H0(t) · e^shift: the step function, 0 before the first event time. */
function scaledAt(b: BaselineHazard, t: number): number {
  let lo = 0, hi = b.times.length; // first index with times > t
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (b.times[mid]! <= t) lo = mid + 1;
    else hi = mid;
  }
  return lo === 0 ? 0 : b.scaledCumHazard[lo - 1]!;
}

/** H0(t), the baseline cumulative hazard (at score 0). */
export function cumulativeHazardAt(b: BaselineHazard, t: number): number {
  return scaledAt(b, t) * Math.exp(-b.shift);
}

/** S(t | x) for each score (rows) at each time (columns), row-major n × times.length. */
export function survivalMatrix(b: BaselineHazard, score: ArrayLike<number>, times: readonly number[]): Float64Array {
  const h = times.map((t) => scaledAt(b, t));
  const out = new Float64Array(score.length * times.length);
  for (let i = 0; i < score.length; i++) {
    const r = Math.exp(score[i]! - b.shift);
    for (let k = 0; k < times.length; k++) out[i * times.length + k] = Math.exp(-h[k]! * r);
  }
  return out;
}
