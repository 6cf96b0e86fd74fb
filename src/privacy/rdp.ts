/**
 * Rényi-DP accountant for the Poisson-subsampled Gaussian mechanism.
 *
 * RDP of one step at order α follows Mironov, Talwar & Zhang (2019), "Rényi Differential Privacy of the
 * Sampled Gaussian Mechanism": the exact binomial sum for integer α (Section 3.3) and the two-sided
 * convergent series for fractional α (Section 3.3, eq. for A_α with erfc tails). It is the same
 * computation as TF-Privacy/dp_accounting and Opacus, so figures are comparable with theirs.
 *
 * RDP composes additively over steps. Conversion to (ε, δ) uses the tighter bound of Balle et al. (2020)
 * "Hypothesis testing interpretations and Rényi DP", Prop. 12, also Canonne, Kamath & Steinke (2020) eq. 20:
 *   ε = rdp + log1p(−1/α) − (log δ + log α)/(α − 1),
 * exactly as dp_accounting's `compute_epsilon` and Opacus' `get_privacy_spent`. The classic conversion
 * (Mironov 2017, Prop. 3: ε = rdp − log δ/(α − 1)) is exported too, for comparison with older papers.
 *
 * The accountant is only valid for Poisson sampling with rate q (each example independently included).
 */
import { logErfc } from './special.js';

/** dp_accounting's default grid, extended to 64 as in TF-Privacy's DP-SGD helper. */
export const DEFAULT_ORDERS: readonly number[] = Object.freeze([
  1.25, 1.5, 1.75, 2, 2.25, 2.5, 3, 3.5, 4, 4.5,
  ...Array.from({ length: 60 }, (_, i) => i + 5), // 5..64
  128, 256, 512,
]);

/** log(exp(a) + exp(b)) without overflow. */
function logAdd(a: number, b: number): number {
  const lo = Math.min(a, b), hi = Math.max(a, b);
  if (lo === -Infinity) return hi;
  return Math.log1p(Math.exp(lo - hi)) + hi;
}

/** log(exp(a) − exp(b)) for a ≥ b. */
function logSub(a: number, b: number): number {
  if (a < b) throw new Error('logSub: result would be negative');
  if (b === -Infinity) return a;
  if (a === b) return -Infinity;
  const d = a - b;
  // expm1 overflows past ~709; there exp(b) is negligible beside exp(a).
  return d > 700 ? a : Math.log(Math.expm1(d)) + b;
}

/** log A_α for integer α ≥ 2: A_α = Σ_i C(α,i) q^i (1−q)^{α−i} exp((i²−i)/(2σ²)). */
function logAInt(q: number, sigma: number, alpha: number): number {
  let logA = -Infinity;
  let logBinom = 0; // log C(α, 0)
  const lq = Math.log(q), l1q = Math.log1p(-q);
  for (let i = 0; i <= alpha; i++) {
    if (i > 0) logBinom += Math.log((alpha - i + 1) / i);
    const s = logBinom + i * lq + (alpha - i) * l1q + (i * i - i) / (2 * sigma * sigma);
    logA = logAdd(logA, s);
  }
  return logA;
}

/** log A_α for fractional α > 1, the convergent two-sided series of Mironov et al. (2019). */
function logAFrac(q: number, sigma: number, alpha: number): number {
  let logA0 = -Infinity, logA1 = -Infinity;
  const z0 = sigma * sigma * Math.log(1 / q - 1) + 0.5;
  const lq = Math.log(q), l1q = Math.log1p(-q);
  let logAbsCoef = 0; // log |C(α, 0)|
  let coefSign = 1;
  for (let i = 0; ; i++) {
    if (i > 0) {
      const f = (alpha - i + 1) / i; // generalised binomial recurrence, may turn negative
      if (f < 0) coefSign = -coefSign;
      logAbsCoef += Math.log(Math.abs(f));
    }
    const j = alpha - i;
    const logT0 = logAbsCoef + i * lq + j * l1q;
    const logT1 = logAbsCoef + j * lq + i * l1q;
    const logE0 = Math.log(0.5) + logErfc((i - z0) / (Math.SQRT2 * sigma));
    const logE1 = Math.log(0.5) + logErfc((z0 - j) / (Math.SQRT2 * sigma));
    const logS0 = logT0 + (i * i - i) / (2 * sigma * sigma) + logE0;
    const logS1 = logT1 + (j * j - j) / (2 * sigma * sigma) + logE1;
    if (coefSign > 0) {
      logA0 = logAdd(logA0, logS0);
      logA1 = logAdd(logA1, logS1);
    } else {
      logA0 = logSub(logA0, logS0);
      logA1 = logSub(logA1, logS1);
    }
    if (Math.max(logS0, logS1) < -30) break;
    if (i > 100_000) throw new Error(`RDP series did not converge (q=${q}, σ=${sigma}, α=${alpha})`);
  }
  return logAdd(logA0, logA1);
}

/** RDP at order α of one step of the Poisson-subsampled Gaussian mechanism (sampling rate q, noise multiplier σ). */
export function rdpSampledGaussian(q: number, sigma: number, alpha: number): number {
  if (!(q >= 0 && q <= 1)) throw new Error(`sampling rate must be in [0,1], got ${q}`);
  if (!(sigma >= 0)) throw new Error(`noise multiplier must be ≥ 0, got ${sigma}`);
  if (!(alpha > 1)) throw new Error(`RDP order must be > 1, got ${alpha}`);
  if (q === 0) return 0;
  if (sigma === 0) return Infinity;
  if (q === 1) return alpha / (2 * sigma * sigma);
  if (alpha === Infinity) return Infinity;
  const logA = Number.isInteger(alpha) ? logAInt(q, sigma, alpha) : logAFrac(q, sigma, alpha);
  return logA / (alpha - 1);
}

/** RDP vector over `orders` of `steps` composed steps. */
export function computeRdp(q: number, sigma: number, steps: number, orders: readonly number[] = DEFAULT_ORDERS): number[] {
  if (!(Number.isInteger(steps) && steps >= 0)) throw new Error(`steps must be a non-negative integer, got ${steps}`);
  return orders.map((a) => steps === 0 ? 0 : rdpSampledGaussian(q, sigma, a) * steps);
}

/**
 * RDP at order α of the Laplace mechanism with scale λ per unit of L1 sensitivity (Mironov 2017, Prop. 6):
 * ε(α) = log( α/(2α−1)·e^{(α−1)/λ} + (α−1)/(2α−1)·e^{−α/λ} ) / (α − 1), summed in log space so large α/λ
 * cannot overflow. It tends to the pure-DP ε = 1/λ as α → ∞.
 */
export function rdpLaplace(scale: number, alpha: number): number {
  if (!(scale >= 0)) throw new Error(`Laplace scale must be ≥ 0, got ${scale}`);
  if (!(alpha > 1)) throw new Error(`RDP order must be > 1, got ${alpha}`);
  if (scale === 0) return Infinity;
  const a = Math.log(alpha / (2 * alpha - 1)) + (alpha - 1) / scale;
  const b = Math.log((alpha - 1) / (2 * alpha - 1)) - alpha / scale;
  return logAdd(a, b) / (alpha - 1);
}

export interface EpsResult { eps: number; order: number }

function checkInputs(orders: readonly number[], rdp: readonly number[], delta: number): void {
  if (orders.length !== rdp.length) throw new Error('orders and rdp must have the same length');
  if (!(delta > 0 && delta < 1)) throw new Error(`delta must be in (0,1), got ${delta}`);
}

/** Tighter conversion (Balle et al. 2020, Prop. 12; Canonne et al. 2020), as in dp_accounting and Opacus. */
export function epsFromRdp(orders: readonly number[], rdp: readonly number[], delta: number): EpsResult {
  checkInputs(orders, rdp, delta);
  let best: EpsResult = { eps: Infinity, order: NaN };
  for (let k = 0; k < orders.length; k++) {
    const a = orders[k]!, r = rdp[k]!;
    if (r < 0) throw new Error('RDP values must be ≥ 0');
    let eps: number;
    // δ² + expm1(−r) > 0: the KL bound δ ≤ sqrt(1−exp(−r)) already gives ε = 0 (dp_accounting does the same).
    if (delta * delta + Math.expm1(-r) > 0) eps = 0;
    else if (a > 1.01) eps = r + Math.log1p(-1 / a) - (Math.log(delta) + Math.log(a)) / (a - 1);
    else eps = Infinity; // the bound is numerically unstable as α → 1
    if (eps < best.eps) best = { eps, order: a };
  }
  return { eps: Math.max(0, best.eps), order: best.order };
}

/** Classic conversion ε = rdp − log δ/(α − 1) (Mironov 2017, Prop. 3). Looser; kept for comparison. */
export function epsFromRdpClassic(orders: readonly number[], rdp: readonly number[], delta: number): EpsResult {
  checkInputs(orders, rdp, delta);
  let best: EpsResult = { eps: Infinity, order: NaN };
  for (let k = 0; k < orders.length; k++) {
    const eps = rdp[k]! - Math.log(delta) / (orders[k]! - 1);
    if (eps < best.eps) best = { eps, order: orders[k]! };
  }
  return { eps: Math.max(0, best.eps), order: best.order };
}

/** ε after `steps` steps of DP-SGD/DP-FedAvg with Poisson rate q and noise multiplier σ. */
export function epsilonFor(sigma: number, delta: number, q: number, steps: number, orders: readonly number[] = DEFAULT_ORDERS): number {
  return epsFromRdp(orders, computeRdp(q, sigma, steps, orders), delta).eps;
}

/**
 * Smallest noise multiplier (to relative tolerance `tol`) whose ε after `steps` steps at rate q is ≤ targetEps.
 * Bisection is valid because ε is monotone decreasing in σ. Returns 0 for targetEps = ∞ or steps = 0.
 * The returned σ is the upper end of the final bracket, so the guarantee ε ≤ targetEps always holds.
 */
export function noiseMultiplierFor(targetEps: number, delta: number, q: number, steps: number,
  orders: readonly number[] = DEFAULT_ORDERS, tol = 1e-4): number {
  if (!(targetEps > 0)) throw new Error(`target ε must be > 0, got ${targetEps}`);
  if (targetEps === Infinity || steps === 0 || q === 0) return 0;
  const eps = (s: number) => epsilonFor(s, delta, q, steps, orders);
  let hi = 1;
  while (eps(hi) > targetEps) {
    hi *= 2;
    if (hi > 1e6) throw new Error(`no noise multiplier ≤ 1e6 reaches ε=${targetEps} (δ=${delta}, q=${q}, steps=${steps})`);
  }
  let lo = hi / 2;
  if (eps(lo) <= targetEps) {
    // Keep halving until lo violates the target (or σ is negligibly small).
    while (lo > 1e-6 && eps(lo) <= targetEps) { hi = lo; lo /= 2; }
  }
  while ((hi - lo) / hi > tol) {
    const mid = (lo + hi) / 2;
    if (eps(mid) <= targetEps) hi = mid; else lo = mid;
  }
  return hi;
}

/** Serialisable running RDP account over a fixed order grid. */
export class RdpAccountant {
  readonly orders: readonly number[];
  private rdp: number[];

  constructor(orders: readonly number[] = DEFAULT_ORDERS, rdp?: readonly number[]) {
    if (orders.length === 0 || orders.some((a) => !(a > 1))) throw new Error('orders must be non-empty and all > 1');
    if (rdp && rdp.length !== orders.length) throw new Error('rdp length does not match orders');
    this.orders = [...orders];
    this.rdp = rdp ? [...rdp] : orders.map(() => 0);
  }

  /** Adds `steps` steps of the subsampled Gaussian mechanism. */
  compose(q: number, sigma: number, steps: number): this {
    const add = computeRdp(q, sigma, steps, this.orders);
    this.rdp = this.rdp.map((r, k) => r + add[k]!);
    return this;
  }

  /** The account as it would be after composing these steps, without changing this one. */
  peek(q: number, sigma: number, steps: number): RdpAccountant {
    return new RdpAccountant(this.orders, this.rdp).compose(q, sigma, steps);
  }

  /** Adds `steps` releases of the Laplace mechanism with scale λ per unit sensitivity (analytics queries). */
  composeLaplace(scale: number, steps: number): this {
    if (!(Number.isInteger(steps) && steps >= 0)) throw new Error(`steps must be a non-negative integer, got ${steps}`);
    this.rdp = this.rdp.map((r, k) => r + (steps === 0 ? 0 : rdpLaplace(scale, this.orders[k]!) * steps));
    return this;
  }

  peekLaplace(scale: number, steps: number): RdpAccountant {
    return new RdpAccountant(this.orders, this.rdp).composeLaplace(scale, steps);
  }

  epsilon(delta: number): EpsResult {
    return epsFromRdp(this.orders, this.rdp, delta);
  }

  rdpValues(): number[] { return [...this.rdp]; }

  toJSON(): { orders: number[]; rdp: (number | null)[] } {
    // JSON has no Infinity; null stands for an infinite RDP (σ = 0 spent).
    return { orders: [...this.orders], rdp: this.rdp.map((r) => (Number.isFinite(r) ? r : null)) };
  }

  static fromJSON(j: unknown): RdpAccountant {
    const o = j as { orders?: unknown; rdp?: unknown };
    if (!o || !Array.isArray(o.orders) || !Array.isArray(o.rdp)) throw new Error('accountant JSON needs orders and rdp arrays');
    const orders = o.orders.map((a) => { if (typeof a !== 'number') throw new Error('orders must be numbers'); return a; });
    const rdp = o.rdp.map((r) => {
      if (r === null) return Infinity;
      if (typeof r !== 'number' || !(r >= 0)) throw new Error('rdp values must be numbers ≥ 0 or null');
      return r;
    });
    return new RdpAccountant(orders, rdp);
  }
}
