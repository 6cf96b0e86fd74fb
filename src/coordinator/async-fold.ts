/**
 * The arithmetic of an asynchronous study's fold (FedBuff, Nguyen et al. 2022, "Federated Learning with Buffered
 * Asynchronous Aggregation"), apart from the driver that decides when to fold (async-rounds.ts).
 *
 * Each buffered update i is a delta Δ_i = w_i − b_i from the version b_i its site trained from (not from the
 * current version: the site never saw that one), with staleness s_i = versions committed since b_i. Its weight is
 * `stalenessWeight(s_i)` ≤ 1. Then, over the K updates of the buffer, with the current version w and server
 * learning rate η:
 *
 *   plain:   w' = w + η · Σ n_i·g(s_i)·Δ_i / Σ n_i              (n_i: the site's examples, as FedAvg weighs them)
 *   DP:      w' = w + η · (Σ g(s_i)·clip_C(Δ_i) + N(0, σ²C²)) / K   (client-level DP-FedAvg's fixed denominator)
 *
 * With every update fresh (s = 0) and η = 1, the plain fold is exactly FedAvg of the K models. Under DP each site
 * adds at most one update to a buffer (the driver's rule) and g ≤ 1, so one site moves the noised sum by at most C:
 * each buffer is one Gaussian release at σ for every site in it, the same step the site's own ledger charges.
 * Sums run in float64; the result is float32 in the version's layout (the caller rounds it to the model's dtypes).
 */
import type { AsyncSpec } from '../protocol/api.js';
import { mapWeights, tensorLike, type Weights } from '../protocol/tensors.js';
import { clipInPlace } from '../privacy/clip.js';
import type { NormalSource } from '../privacy/noise.js';

export const DEFAULT_STALENESS_EXPONENT = 0.5;
export const DEFAULT_HINGE_AFTER = 4;
export const DEFAULT_HINGE_SLOPE = 10;

/** g(s): how much an update s versions stale counts (1 when fresh). */
export function stalenessWeight(spec: AsyncSpec, s: number): number {
  if (!(Number.isInteger(s) && s >= 0)) throw new Error(`staleness must be a whole number ≥ 0, got ${s}`);
  switch (spec.stalenessWeight ?? 'polynomial') {
    case 'constant':
      return 1;
    case 'hinge': {
      const b = spec.hingeAfter ?? DEFAULT_HINGE_AFTER;
      return s <= b ? 1 : 1 / ((spec.hingeSlope ?? DEFAULT_HINGE_SLOPE) * (s - b) + 1);
    }
    case 'polynomial':
      return Math.pow(1 + s, -(spec.stalenessExponent ?? DEFAULT_STALENESS_EXPONENT));
  }
}

export interface BufferedUpdate {
  /** The version the site trained from (its aggregated tensors). */
  base: Weights;
  /** What the site sent (the same tensors). */
  local: Weights;
  numExamples: number;
  staleness: number;
}

export interface FoldOptions {
  async: AsyncSpec;
  /** Client-level DP (central noise): clip each delta to clipNorm, noise σ·clipNorm on the sum, divide by K. */
  dp?: { clipNorm: number; noiseMultiplier: number; normal: NormalSource };
}

/** The next version's aggregated tensors from the current ones and a full buffer. */
export function foldBuffer(current: Weights, buffer: BufferedUpdate[], o: FoldOptions): Weights {
  if (buffer.length === 0) throw new Error('an empty buffer folds into nothing');
  const names = Object.keys(current);
  const eta = o.async.serverLr ?? 1;
  const sums = new Map(names.map((k) => [k, new Float64Array(current[k]!.data.length)]));
  let denominator = 0;
  for (const u of buffer) {
    const g = stalenessWeight(o.async, u.staleness);
    const delta = mapWeights(names, (k) => {
      const l = u.local[k], b = u.base[k], c = current[k]!;
      if (!l || !b || l.data.length !== c.data.length || b.data.length !== c.data.length) throw new Error(`a buffered update is missing or misshapes tensor "${k}"`);
      const d = new Float32Array(c.data.length);
      for (let i = 0; i < d.length; i++) d[i] = l.data[i]! - b.data[i]!;
      return tensorLike(c, d);
    });
    if (o.dp) clipInPlace(delta, o.dp.clipNorm);
    const scale = o.dp ? g : u.numExamples * g;
    for (const k of names) {
      const s = sums.get(k)!, d = delta[k]!.data;
      for (let i = 0; i < s.length; i++) s[i] = s[i]! + scale * d[i]!;
    }
    denominator += o.dp ? 1 : u.numExamples;
  }
  if (!(denominator > 0)) throw new Error('the buffer holds no training examples');
  if (o.dp) {
    const std = o.dp.noiseMultiplier * o.dp.clipNorm;
    for (const k of names) {
      const s = sums.get(k)!;
      for (let i = 0; i < s.length; i++) s[i] = s[i]! + std * o.dp.normal.normal();
    }
  }
  return mapWeights(names, (k) => {
    const c = current[k]!.data, s = sums.get(k)!, out = new Float32Array(c.length);
    for (let i = 0; i < out.length; i++) out[i] = c[i]! + (eta * s[i]!) / denominator;
    return tensorLike(current[k]!, out);
  });
}
