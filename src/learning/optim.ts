/**
 * Optimisers over Weights, with PyTorch's update rules (torch.optim.SGD / Adam, defaults:
 * no weight decay, dampening 0, no Nesterov, no AMSGrad). Updates are applied in place to
 * the float32 weights; the arithmetic of one element is float64, rounded once when stored.
 */
import type { Weights } from '../protocol/tensors.js';
import type { OptimizerSpec } from './types.js';

export interface Optimizer {
  /** Applies one update to `w` (in place) from gradient `g`. */
  step(w: Weights, g: Weights): void;
}

/** SGD, optionally with momentum: buf = μ·buf + g (first step buf = g); w −= lr·buf. */
export class Sgd implements Optimizer {
  private buf: Map<string, Float32Array> | null = null;
  constructor(readonly lr: number, readonly momentum = 0) {
    if (!(lr > 0)) throw new Error(`sgd: lr must be > 0, got ${lr}`);
    if (!(momentum >= 0 && momentum < 1)) throw new Error(`sgd: momentum must be in [0, 1), got ${momentum}`);
  }

  step(w: Weights, g: Weights): void {
    const lr = this.lr, mu = this.momentum;
    for (const [k, t] of Object.entries(w)) {
      const p = t.data, gd = gradOf(g, k, p.length);
      if (mu === 0) {
        for (let i = 0; i < p.length; i++) p[i] = p[i]! - lr * gd[i]!;
        continue;
      }
      this.buf ??= new Map();
      let b = this.buf.get(k);
      if (!b) {
        b = new Float32Array(gd); // PyTorch: the first step's buffer is the gradient itself
        this.buf.set(k, b);
      } else {
        for (let i = 0; i < p.length; i++) b[i] = mu * b[i]! + gd[i]!;
      }
      for (let i = 0; i < p.length; i++) p[i] = p[i]! - lr * b[i]!;
    }
  }
}

/**
 * Adam with bias correction exactly as torch.optim.Adam computes it:
 * m = β1 m + (1−β1) g; v = β2 v + (1−β2) g²; w −= (lr / (1−β1^t)) · m / (√v / √(1−β2^t) + ε).
 */
export class Adam implements Optimizer {
  private t = 0;
  private m = new Map<string, Float32Array>();
  private v = new Map<string, Float32Array>();
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;

  constructor(readonly lr: number, betas: [number, number] = [0.9, 0.999], eps = 1e-8) {
    if (!(lr > 0)) throw new Error(`adam: lr must be > 0, got ${lr}`);
    [this.beta1, this.beta2] = betas;
    if (!(this.beta1 >= 0 && this.beta1 < 1 && this.beta2 >= 0 && this.beta2 < 1)) throw new Error(`adam: betas must be in [0, 1), got [${betas}]`);
    if (!(eps >= 0)) throw new Error(`adam: eps must be >= 0, got ${eps}`);
    this.eps = eps;
  }

  step(w: Weights, g: Weights): void {
    this.t++;
    const b1 = this.beta1, b2 = this.beta2;
    const bc1 = 1 - b1 ** this.t;
    const bc2sqrt = Math.sqrt(1 - b2 ** this.t);
    const stepSize = this.lr / bc1;
    for (const [k, t] of Object.entries(w)) {
      const p = t.data, gd = gradOf(g, k, p.length);
      let m = this.m.get(k), v = this.v.get(k);
      if (!m || !v) {
        m = new Float32Array(p.length);
        v = new Float32Array(p.length);
        this.m.set(k, m);
        this.v.set(k, v);
      }
      for (let i = 0; i < p.length; i++) {
        const gi = gd[i]!;
        m[i] = b1 * m[i]! + (1 - b1) * gi;
        v[i] = b2 * v[i]! + (1 - b2) * gi * gi;
        p[i] = p[i]! - (stepSize * m[i]!) / (Math.sqrt(v[i]!) / bc2sqrt + this.eps);
      }
    }
  }
}

export function createOptimizer(spec: OptimizerSpec): Optimizer {
  switch (spec.kind) {
    case 'sgd':
      return new Sgd(spec.lr, spec.momentum ?? 0);
    case 'adam':
      return new Adam(spec.lr, spec.betas ?? [0.9, 0.999], spec.eps ?? 1e-8);
    default:
      throw new Error(`unknown optimizer kind "${(spec as { kind: unknown }).kind}" (expected "sgd" or "adam")`);
  }
}

function gradOf(g: Weights, k: string, len: number): Float32Array {
  const t = g[k];
  if (!t || t.data.length !== len) throw new Error(`optimizer: gradient for "${k}" missing or of the wrong size`);
  return t.data;
}
