/**
 * Sample-level DP-SGD (Abadi et al. 2016) for the built-in models, on any `Model` of the learning core.
 *
 * Sampling is Poisson: every step includes each row independently with probability q, which is exactly what
 * the RDP accountant (`rdp.ts`) analyses; a fixed-size shuffled batch would need a different analysis and is
 * deliberately not offered. Each sampled row's gradient is computed alone (model.lossAndGrad with one index),
 * clipped to L2 norm C, the clipped gradients are summed, N(0, σ²C²) is added to the sum, and the result is
 * divided by the expected batch size qN (a fixed denominator, as Opacus does, so the noise scale does not
 * depend on the random batch size). An SGD step with optional momentum follows (post-processing, free).
 * Sampling and noise draw from a cryptographic generator: the batch membership must stay secret too.
 */
import type { Weights } from '../protocol/tensors.js';
import { cloneWeights, zerosLike } from '../protocol/tensors.js';
import type { Dataset, Model, Rng } from '../learning/types.js';
import { clipInPlace } from './clip.js';
import { addGaussianNoise, type NormalSource } from './noise.js';
import { noiseMultiplierFor } from './rdp.js';
import type { MechanismPlan } from './budget.js';
import { CryptoNormal } from './noise.js';

export interface DpRandom extends NormalSource {
  /** Uniform in (0, 1). */
  uniform(): number;
}

export interface DpSgdConfig {
  clipNorm: number;
  noiseMultiplier: number;
  /** Poisson sampling rate q (expected batch size / rows). */
  sampleRate: number;
  steps: number;
  lr: number;
  momentum?: number;
}

export interface DpSgdResult {
  weights: Weights;
  steps: number;
  /** Mean realised batch size. */
  meanBatch: number;
  /** Fraction of per-example gradients whose norm exceeded C. */
  clippedFraction: number;
  meanLoss: number;
}

function checkConfig(cfg: DpSgdConfig, n: number): void {
  if (n < 1) throw new Error('DP-SGD needs at least one row');
  if (!(cfg.clipNorm > 0) || !Number.isFinite(cfg.clipNorm)) throw new Error('clipNorm must be finite and > 0');
  if (!(cfg.noiseMultiplier >= 0) || !Number.isFinite(cfg.noiseMultiplier)) throw new Error('noiseMultiplier must be finite and ≥ 0');
  if (!(cfg.sampleRate > 0 && cfg.sampleRate <= 1)) throw new Error('sampleRate must be in (0, 1]');
  if (!(Number.isInteger(cfg.steps) && cfg.steps >= 0)) throw new Error('steps must be a non-negative integer');
  if (!(cfg.lr > 0)) throw new Error('lr must be > 0');
}

export function dpSgdTrain(model: Model, w0: Weights, data: Dataset, cfg: DpSgdConfig, rnd: DpRandom, dropoutRng?: Rng): DpSgdResult {
  checkConfig(cfg, data.n);
  const w = cloneWeights(w0);
  const g = zerosLike(w), acc = zerosLike(w);
  const vel = cfg.momentum ? zerosLike(w) : null;
  const denom = cfg.sampleRate * data.n;
  let rows = 0, clipped = 0, lossSum = 0;
  const one = new Int32Array(1);
  for (let step = 0; step < cfg.steps; step++) {
    for (const t of Object.values(acc)) t.data.fill(0);
    for (let i = 0; i < data.n; i++) {
      if (rnd.uniform() >= cfg.sampleRate) continue;
      for (const t of Object.values(g)) t.data.fill(0);
      one[0] = i;
      lossSum += model.lossAndGrad(w, data, one, g, dropoutRng);
      if (clipInPlace(g, cfg.clipNorm) > cfg.clipNorm) clipped++;
      rows++;
      for (const [k, t] of Object.entries(acc)) {
        const a = t.data, s = g[k]!.data;
        for (let j = 0; j < a.length; j++) a[j] = a[j]! + s[j]!;
      }
    }
    addGaussianNoise(acc, cfg.noiseMultiplier * cfg.clipNorm, rnd);
    for (const [k, t] of Object.entries(w)) {
      const p = t.data, a = acc[k]!.data, v = vel?.[k]!.data;
      for (let j = 0; j < p.length; j++) {
        let d = a[j]! / denom;
        if (v) { v[j] = cfg.momentum! * v[j]! + d; d = v[j]!; }
        p[j] = p[j]! - cfg.lr * d;
      }
    }
  }
  return {
    weights: w,
    steps: cfg.steps,
    meanBatch: cfg.steps ? rows / cfg.steps : 0,
    clippedFraction: rows ? clipped / rows : 0,
    meanLoss: rows ? lossSum / rows : NaN,
  };
}

/**
 * Plans DP-SGD for a target (ε, δ): q = batchSize/n, steps = round(epochs/q), σ by bisection on the accountant.
 * targetEps = ∞ gives σ = 0 (no privacy; the baseline).
 */
export function planDpSgd(p: { targetEps: number; delta: number; rows: number; batchSize: number; epochs: number }): { sampleRate: number; steps: number; noiseMultiplier: number } {
  if (!(p.rows >= 1) || !(p.batchSize >= 1)) throw new Error('rows and batchSize must be ≥ 1');
  const sampleRate = Math.min(1, p.batchSize / p.rows);
  const steps = Math.max(1, Math.round(p.epochs / sampleRate));
  return { sampleRate, steps, noiseMultiplier: noiseMultiplierFor(p.targetEps, p.delta, sampleRate, steps) };
}

/** The mechanism a DP-SGD run releases, for `PrivacyBudget.wouldExceed` / `spend`. */
export function mechanismOf(cfg: Pick<DpSgdConfig, 'sampleRate' | 'noiseMultiplier' | 'steps'>): MechanismPlan {
  return { sampleRate: cfg.sampleRate, noiseMultiplier: cfg.noiseMultiplier, steps: cfg.steps };
}

/**
 * One DP-SGD training task in the shape of the learning core's `fit` output, for the site agent:
 * check `budget.wouldExceed(mechanismOf(cfg))` first, call this, then `budget.spend(plan)` before uploading.
 * Randomness: fresh from the OS unless `random` is given (tests, reproducible benchmarks).
 */
export function dpFit(input: { model: Model; weights: Weights; data: Dataset; config: DpSgdConfig; random?: DpRandom; dropoutRng?: Rng }):
  { weights: Weights; numExamples: number; loss: number; steps: number; plan: MechanismPlan; clippedFraction: number } {
  const r = dpSgdTrain(input.model, input.weights, input.data, input.config, input.random ?? new CryptoNormal(), input.dropoutRng);
  return { weights: r.weights, numExamples: input.data.n, loss: r.meanLoss, steps: r.steps, plan: mechanismOf(input.config), clippedFraction: r.clippedFraction };
}
