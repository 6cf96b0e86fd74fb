/**
 * Survival metrics beside Harrell's C (metrics/cindex.ts), each corrected for censoring by inverse
 * probability of censoring weights (IPCW) from G, the Kaplan–Meier estimate of the censoring
 * distribution:
 *
 * - Uno's C (Uno et al. 2011): Harrell's pairs (i had the event first), each weighted by G(T_i−)⁻², over
 *   event times up to τ; tied risks count ½. Equals R's concordance(timewt = "n/G2", ymax = τ).
 * - Cumulative/dynamic time-dependent AUC (Uno et al. 2007; Hung & Chiang 2010): at time t the cases
 *   are the events by t (weight G(T_i−)⁻¹), the controls everyone still at risk after t; AUC(t) is the
 *   weighted fraction of case–control pairs the risk scores order correctly (ties ½).
 * - Brier score (Graf et al. 1999): BS(t) = (1/n) Σ_i [ 1{T_i ≤ t, event} S_i(t)² / G(T_i−)
 *   + 1{T_i > t} (1 − S_i(t))² / G(t) ], where S_i(t) is the model's survival prediction; the integrated
 *   Brier score is its trapezoidal integral over the evaluation times divided by their span.
 *
 * G treats a censoring at the same time as an event as happening after it (the usual convention: a
 * subject who had the event at t was not at risk of being censored at t). By default G comes from the
 * evaluated data; pass the training rows as `censoring` to estimate it there instead.
 */

export interface SurvivalData {
  time: ArrayLike<number>;
  event: ArrayLike<number>;
}

/** The censoring survival function: values just after each distinct censoring time. */
export interface CensoringKm {
  times: number[];
  surv: number[];
}

export function censoringKm(d: SurvivalData): CensoringKm {
  const n = d.time.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => d.time[a]! - d.time[b]!);
  const times: number[] = [], surv: number[] = [];
  let atRisk = n, g = 1;
  for (let k = 0; k < n; ) {
    const t = d.time[order[k]!]!;
    let dead = 0, cens = 0;
    while (k < n && d.time[order[k]!] === t) {
      if (d.event[order[k]!]! > 0.5) dead++;
      else cens++;
      k++;
    }
    // Events at t leave first; the censorings at t face the rest.
    if (cens > 0) {
      g *= 1 - cens / (atRisk - dead);
      times.push(t);
      surv.push(g);
    }
    atRisk -= dead + cens;
  }
  return { times, surv };
}

/** G(t) (right-continuous) or, with `before`, G(t−). */
export function censoringAt(g: CensoringKm, t: number, before = false): number {
  let lo = 0, hi = g.times.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (before ? g.times[mid]! < t : g.times[mid]! <= t) lo = mid + 1;
    else hi = mid;
  }
  return lo === 0 ? 1 : g.surv[lo - 1]!;
}

function checkLengths(what: string, n: number, d: SurvivalData): void {
  if (d.time.length !== n || d.event.length !== n) throw new Error(`${what}: ${n} predictions for ${d.time.length} times and ${d.event.length} events`);
}

/** Uno's C of risk scores (higher = earlier event), over event times ≤ tau. NaN without a comparable pair. */
export function unoC(risk: ArrayLike<number>, d: SurvivalData, opts: { tau?: number; censoring?: SurvivalData } = {}): number {
  const n = risk.length;
  checkLengths('unoC', n, d);
  const g = censoringKm(opts.censoring ?? d);
  const tau = opts.tau ?? Infinity;
  let num = 0, den = 0;
  for (let i = 0; i < n; i++) {
    const ti = d.time[i]!;
    if (!(d.event[i]! > 0.5) || ti > tau) continue;
    const gi = censoringAt(g, ti, true);
    if (!(gi > 0)) continue;
    const w = 1 / (gi * gi);
    for (let j = 0; j < n; j++) {
      const tj = d.time[j]!;
      if (!(tj > ti || (tj === ti && !(d.event[j]! > 0.5)))) continue;
      den += w;
      if (risk[i]! > risk[j]!) num += w;
      else if (risk[i] === risk[j]) num += w / 2;
    }
  }
  return den > 0 ? num / den : NaN;
}

/** Cumulative/dynamic AUC(t) at each of `times` (NaN where there is no case or no control). */
export function timeDependentAuc(risk: ArrayLike<number>, d: SurvivalData, times: readonly number[], opts: { censoring?: SurvivalData } = {}): number[] {
  const n = risk.length;
  checkLengths('timeDependentAuc', n, d);
  const g = censoringKm(opts.censoring ?? d);
  return times.map((t) => {
    let num = 0, cases = 0, controls = 0;
    for (let j = 0; j < n; j++) if (d.time[j]! > t) controls++;
    for (let i = 0; i < n; i++) {
      if (!(d.event[i]! > 0.5) || d.time[i]! > t) continue;
      const gi = censoringAt(g, d.time[i]!, true);
      if (!(gi > 0)) continue;
      const w = 1 / gi;
      cases += w;
      for (let j = 0; j < n; j++) {
        if (!(d.time[j]! > t)) continue;
        if (risk[i]! > risk[j]!) num += w;
        else if (risk[i] === risk[j]) num += w / 2;
      }
    }
    return cases > 0 && controls > 0 ? num / (cases * controls) : NaN;
  });
}

/**
 * BS(t) at each of `times`; `surv` is row-major n × times.length, S_i(t_k) (e.g. survivalMatrix of
 * models/cox-baseline.ts).
 */
export function brierScores(surv: ArrayLike<number>, d: SurvivalData, times: readonly number[], opts: { censoring?: SurvivalData } = {}): number[] {
  const n = d.time.length, K = times.length;
  if (surv.length !== n * K) throw new Error(`brierScores: ${surv.length} predictions for ${n} rows × ${K} times`);
  const g = censoringKm(opts.censoring ?? d);
  return times.map((t, k) => {
    const gt = censoringAt(g, t);
    let s = 0;
    for (let i = 0; i < n; i++) {
      const p = surv[i * K + k]!, ti = d.time[i]!;
      if (ti <= t && d.event[i]! > 0.5) {
        const gi = censoringAt(g, ti, true);
        if (gi > 0) s += (p * p) / gi;
      } else if (ti > t && gt > 0) s += ((1 - p) * (1 - p)) / gt;
    }
    return s / n;
  });
}

/** Trapezoidal integral of BS over `times`, divided by their span (as scikit-survival's integrated_brier_score). */
export function integratedBrierScore(times: readonly number[], scores: readonly number[]): number {
  if (times.length < 2 || times.length !== scores.length) throw new Error('integratedBrierScore: needs at least two times and one score per time');
  let area = 0;
  for (let k = 1; k < times.length; k++) {
    if (!(times[k]! > times[k - 1]!)) throw new Error('integratedBrierScore: times must increase');
    area += ((scores[k]! + scores[k - 1]!) / 2) * (times[k]! - times[k - 1]!);
  }
  return area / (times[times.length - 1]! - times[0]!);
}
