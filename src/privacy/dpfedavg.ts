/**
 * Client-level DP-FedAvg (McMahan et al. 2018) with fixed or adaptive clipping (Andrew et al. 2021).
 *
 * Each sampled site's update Δ_i = w_i − w_global is clipped to L2 norm C. The mean uses the fixed denominator
 * m (clients asked this round), not the number that answered, and equal weights: example-count weighting
 * would let one site's sensitivity exceed C/m. Noise N(0, σ²C²) on the sum is added
 *  - centrally by the coordinator (`mode: 'central'`, the coordinator is trusted with the clipped updates), or
 *  - distributed (`mode: 'distributed'`): each of the n sites adds N(0, σ²C²/n) to its clipped update before
 *    secure aggregation, so the sum carries N(0, σ²C²) and nobody, the coordinator included, sees a less
 *    noisy value. If fewer than n sites survive, the sum carries less noise than planned; budget for that
 *    by setting n to the minimum number of survivors SecAgg+ accepts (its threshold), as Kairouz et al. 2021 do.
 * Accounting: one round is one step of the subsampled Gaussian with q = m / (total sites), σ = noiseMultiplier.
 */
import type { Weights } from '../protocol/tensors.js';
import { zerosLike } from '../protocol/tensors.js';
import { clipInPlace } from './clip.js';
import { addGaussianNoise, type NormalSource } from './noise.js';
import type { MechanismPlan } from './budget.js';

export interface DpFedAvgConfig {
  clipNorm: number;
  noiseMultiplier: number;
  mode: 'central' | 'distributed';
  /** m: sites asked per round; the fixed denominator of the mean. */
  clientsPerRound: number;
}

/** Δ = local − global as a fresh Weights (same layout as `global`). */
export function updateDelta(local: Weights, global: Weights): Weights {
  const out = zerosLike(global);
  for (const [k, t] of Object.entries(global)) {
    const l = local[k];
    if (!l || l.data.length !== t.data.length) throw new Error(`update is missing or misshapes tensor "${k}"`);
    const o = out[k]!.data;
    for (let i = 0; i < o.length; i++) o[i] = l.data[i]! - t.data[i]!;
  }
  return out;
}

/**
 * Site side: clip Δ in place and, in distributed mode, add this site's share N(0, σ²C²/n) of the noise.
 * Returns the pre-clip norm and whether it was within C (the bit adaptive clipping needs).
 */
export function privatiseUpdate(delta: Weights, cfg: DpFedAvgConfig, src: NormalSource): { norm: number; unclipped: boolean } {
  const norm = clipInPlace(delta, cfg.clipNorm);
  if (cfg.mode === 'distributed') {
    addGaussianNoise(delta, (cfg.noiseMultiplier * cfg.clipNorm) / Math.sqrt(cfg.clientsPerRound), src);
  }
  return { norm, unclipped: norm <= cfg.clipNorm };
}

/**
 * Coordinator side, central mode: clip every Δ (again: the coordinator must not trust the sites' clipping),
 * sum, add N(0, σ²C²), divide by m. Distributed mode: the deltas are already clipped and noised (normally
 * they arrive as one SecAgg+ sum: pass it as a single element), so only sum and divide.
 * Returns the new global model w_global + mean Δ.
 */
export function dpFedAvgAggregate(global: Weights, deltas: Weights[], cfg: DpFedAvgConfig, src: NormalSource): Weights {
  if (!(cfg.clientsPerRound >= 1)) throw new Error('clientsPerRound must be ≥ 1');
  const sum = zerosLike(global);
  for (const d of deltas) {
    const c = cfg.mode === 'central' ? structuredClone(d) : d;
    if (cfg.mode === 'central') clipInPlace(c, cfg.clipNorm);
    for (const [k, t] of Object.entries(sum)) {
      const s = c[k];
      if (!s || s.data.length !== t.data.length) throw new Error(`update is missing or misshapes tensor "${k}"`);
      for (let i = 0; i < t.data.length; i++) t.data[i] = t.data[i]! + s.data[i]!;
    }
  }
  if (cfg.mode === 'central') addGaussianNoise(sum, cfg.noiseMultiplier * cfg.clipNorm, src);
  const out = zerosLike(global);
  for (const [k, t] of Object.entries(global)) {
    const o = out[k]!.data, s = sum[k]!.data;
    for (let i = 0; i < o.length; i++) o[i] = t.data[i]! + s[i]! / cfg.clientsPerRound;
  }
  return out;
}

/**
 * Adaptive clipping (Andrew, Thakkar, McMahan & Ramaswamy 2021, "Differentially private learning with
 * adaptive clipping"): the clip norm tracks the γ-quantile of update norms by the geometric rule
 *   C ← C · exp(−η (b̃ − γ)),  b̃ = (Σ_i 1[‖Δ_i‖ ≤ C] + N(0, σ_b²)) / m.
 * The count is itself released with noise σ_b, so the update noise must shrink to keep the same total
 * privacy: see `adaptiveUpdateNoiseMultiplier`.
 */
export interface AdaptiveClipState {
  clipNorm: number;
  targetQuantile: number;
  learningRate: number;
  countNoiseStd: number;
}

export class AdaptiveClip {
  private s: AdaptiveClipState;

  constructor(init: { initialClip: number; targetQuantile?: number; learningRate?: number; countNoiseStd: number }) {
    const s: AdaptiveClipState = {
      clipNorm: init.initialClip,
      targetQuantile: init.targetQuantile ?? 0.5,
      learningRate: init.learningRate ?? 0.2,
      countNoiseStd: init.countNoiseStd,
    };
    AdaptiveClip.check(s);
    this.s = s;
  }

  private static check(s: AdaptiveClipState): void {
    if (!(s.clipNorm > 0) || !Number.isFinite(s.clipNorm)) throw new Error('clip norm must be finite and > 0');
    if (!(s.targetQuantile >= 0 && s.targetQuantile <= 1)) throw new Error('target quantile must be in [0,1]');
    if (!(s.learningRate > 0)) throw new Error('clip learning rate must be > 0');
    if (!(s.countNoiseStd >= 0)) throw new Error('count noise std must be ≥ 0');
  }

  get clipNorm(): number { return this.s.clipNorm; }

  /** One round: `unclipped[i]` is site i's bit 1[‖Δ_i‖ ≤ C]; m is the fixed denominator. Returns the new C. */
  update(unclipped: readonly boolean[], clientsPerRound: number, src: NormalSource): number {
    let count = 0;
    for (const b of unclipped) if (b) count++;
    const noisy = (count + this.s.countNoiseStd * src.normal()) / clientsPerRound;
    this.s.clipNorm *= Math.exp(-this.s.learningRate * (noisy - this.s.targetQuantile));
    return this.s.clipNorm;
  }

  toJSON(): AdaptiveClipState { return { ...this.s }; }

  static fromJSON(j: AdaptiveClipState): AdaptiveClip {
    const a = new AdaptiveClip({ initialClip: j.clipNorm, targetQuantile: j.targetQuantile, learningRate: j.learningRate, countNoiseStd: j.countNoiseStd });
    return a;
  }
}

/**
 * Noise multiplier for the update sum when the clip count is also released with noise σ_b
 * (Andrew et al. 2021, Thm. 1): z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2), so the pair costs what z alone would.
 */
export function adaptiveUpdateNoiseMultiplier(z: number, countNoiseStd: number): number {
  if (!(z > 0)) throw new Error('noise multiplier must be > 0');
  if (!(2 * countNoiseStd > z)) throw new Error(`count noise std σ_b=${countNoiseStd} must exceed z/2=${z / 2}`);
  return 1 / Math.sqrt(1 / (z * z) - 1 / (4 * countNoiseStd * countNoiseStd));
}

/**
 * One DP-FedAvg round as a mechanism for the study's accountant (`PrivacyBudget` / `RdpAccountant`):
 * q = m / total sites, σ = noiseMultiplier, one step. The RDP analysis is exact for Poisson sampling of sites;
 * picking exactly m sites uniformly is covered only approximately (as in McMahan et al. 2018), so sample
 * sites independently with probability q when the guarantee must be exact.
 */
export function roundMechanism(cfg: DpFedAvgConfig, totalSites: number): MechanismPlan {
  if (!(Number.isInteger(totalSites) && totalSites >= cfg.clientsPerRound)) throw new Error('totalSites must be an integer ≥ clientsPerRound');
  return { sampleRate: cfg.clientsPerRound / totalSites, noiseMultiplier: cfg.noiseMultiplier, steps: 1 };
}
