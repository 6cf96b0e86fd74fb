/**
 * Finite-difference gradient checker for any `Model`.
 *
 * For each checked coordinate it perturbs a copy of the weights by ±h and takes the central
 * difference (L₊ − L₋) / (w₊ − w₋) in float64. Weights are float32, so w ± h is rounded on
 * storage; dividing by the step actually stored (not by 2h) removes that rounding from the
 * estimate. Stochastic layers are held fixed by giving every evaluation a fresh rng from the
 * same factory, i.e. the same dropout mask.
 */
import { cloneWeights, zerosLike, type Weights } from '../protocol/tensors.js';
import type { Dataset, Model, Rng } from './types.js';

export interface GradCheckOptions {
  /** Step relative to max(1, |w|); default 1e-3 (float32 weights cannot take much smaller steps). */
  step?: number;
  /** Coordinates checked per tensor at most, spread evenly; default all. */
  maxPerTensor?: number;
  /** Returns the same stream on every call, so dropout masks repeat; default none (no dropout). */
  rngFactory?: () => Rng;
  /** A coordinate passes when |analytic − numeric| ≤ atol + rtol·max(|analytic|, |numeric|). */
  atol?: number;
  rtol?: number;
}

export interface GradMismatch {
  tensor: string;
  index: number;
  analytic: number;
  numeric: number;
}

export interface GradCheckResult {
  ok: boolean;
  checked: number;
  /** Largest |analytic − numeric| over the checked coordinates. */
  maxAbsError: number;
  /** Coordinates outside tolerance (the first 20). */
  mismatches: GradMismatch[];
}

export function gradCheck(model: Model, w: Weights, data: Dataset, idx: ArrayLike<number>, opts: GradCheckOptions = {}): GradCheckResult {
  const step = opts.step ?? 1e-3, atol = opts.atol ?? 1e-6, rtol = opts.rtol ?? 1e-4;
  const rng = (): Rng | undefined => opts.rngFactory?.();
  const grad = zerosLike(w);
  model.lossAndGrad(w, data, idx, grad, rng());
  const probe = cloneWeights(w);
  const res: GradCheckResult = { ok: true, checked: 0, maxAbsError: 0, mismatches: [] };
  for (const [name, t] of Object.entries(probe)) {
    const size = t.data.length;
    const count = Math.min(size, opts.maxPerTensor ?? size);
    for (let c = 0; c < count; c++) {
      const i = count === size ? c : Math.floor((c * size) / count);
      const orig = t.data[i]!;
      const h = step * Math.max(1, Math.abs(orig));
      t.data[i] = orig + h;
      const up = t.data[i]!;
      const lp = model.lossAndGrad(probe, data, idx, zerosLike(w), rng());
      t.data[i] = orig - h;
      const down = t.data[i]!;
      const lm = model.lossAndGrad(probe, data, idx, zerosLike(w), rng());
      t.data[i] = orig;
      const numeric = (lp - lm) / (up - down);
      const analytic = grad[name]!.data[i]!;
      const err = Math.abs(analytic - numeric);
      res.checked++;
      if (!(err <= res.maxAbsError)) res.maxAbsError = err; // also records NaN
      if (!(err <= atol + rtol * Math.max(Math.abs(analytic), Math.abs(numeric)))) {
        res.ok = false;
        if (res.mismatches.length < 20) res.mismatches.push({ tensor: name, index: i, analytic, numeric });
      }
    }
  }
  return res;
}
