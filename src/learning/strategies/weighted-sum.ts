/**
 * Streaming weighted mean of model updates: Σ w_k y_k / Σ w_k, accumulated in float64 and
 * rounded to float32 once at the end.
 *
 * Two paths, bit-identical results (both add w_k·y_k left to right in the order given):
 *  - `add(y, w)`: streaming; memory is one float64 buffer per tensor (twice the model),
 *    whatever the number of sites.
 *  - `addMany(items)`: when all updates are already in memory (they are, for aggregateFit),
 *    they are only referenced, and `mean()` makes ONE pass over them: per element it sums
 *    up to four updates in registers (unrolled) and writes float32 output directly, so the
 *    float64 buffer is never touched. That pass is memory-bound, close to copying the inputs.
 */
import { emptyWeights, layoutMismatch, layoutOf, setTensor, type Weights, type WeightsLayout } from '../../protocol/tensors.js';

/** Elements per block when more than four updates need a float64 carry between groups. */
const BLOCK = 8192;
const FLT_MAX = 3.4028234663852886e38;

export class WeightedSum {
  private readonly layout: WeightsLayout;
  private readonly keys: string[];
  /** Allocated on the first streaming add only. */
  private acc: Float64Array[] | null = null;
  private pending: Array<{ weights: Weights; w: number }> = [];
  private total = 0;
  private n = 0;

  constructor(like: Weights) {
    this.layout = layoutOf(like);
    this.keys = Object.keys(like);
  }

  get count(): number {
    return this.n;
  }

  get totalWeight(): number {
    return this.total;
  }

  private check(y: Weights, w: number, who: string): void {
    if (!(typeof w === 'number' && Number.isFinite(w) && w > 0)) throw new Error(`${who}: aggregation weight must be a finite number > 0, got ${w}`);
    const msg = layoutMismatch(y, this.layout);
    if (msg) throw new Error(`${who}: ${msg}`);
  }

  add(y: Weights, w: number, who = 'update'): void {
    this.check(y, w, who);
    this.flushPending();
    this.accumulate(y, w);
  }

  private accumulate(y: Weights, w: number): void {
    const first = this.acc === null;
    this.acc ??= this.keys.map((k) => new Float64Array(this.layout[k]!.shape.reduce((a, b) => a * b, 1)));
    for (let t = 0; t < this.keys.length; t++) {
      const a = this.acc[t]!, d = y[this.keys[t]!]!.data;
      if (first) for (let i = 0; i < a.length; i++) a[i] = w * d[i]!;
      else for (let i = 0; i < a.length; i++) a[i] = a[i]! + w * d[i]!;
    }
    this.total += w;
    this.n++;
  }

  /** Same result as add() for each item in order; the items are referenced until mean(). */
  addMany(items: ReadonlyArray<{ weights: Weights; w: number; who?: string }>): void {
    items.forEach((it) => this.check(it.weights, it.w, it.who ?? 'update'));
    if (this.acc !== null) {
      for (const it of items) this.accumulate(it.weights, it.w);
      return;
    }
    for (const it of items) {
      this.pending.push({ weights: it.weights, w: it.w });
      this.total += it.w;
      this.n++;
    }
  }

  private flushPending(): void {
    if (!this.pending.length) return;
    const p = this.pending;
    this.pending = [];
    this.total -= p.reduce((a, it) => a + it.w, 0);
    this.n -= p.length;
    for (const it of p) this.accumulate(it.weights, it.w);
  }

  /**
   * The weighted mean as float32 Weights. Refuses a non-finite result (a NaN or an overflow
   * in some update), naming the tensor and index; the check rides along in the same pass.
   */
  mean(): Weights {
    if (this.n === 0) throw new Error('aggregation: no updates to aggregate');
    const out = emptyWeights();
    // Both paths scale by the same reciprocal, so they stay bit-identical to each other.
    const inv = 1 / this.total;
    for (let t = 0; t < this.keys.length; t++) {
      const key = this.keys[t]!;
      const info = this.layout[key]!;
      const o = new Float32Array(info.shape.reduce((a, b) => a * b, 1));
      const flag = this.acc ? scale(this.acc[t]!, inv, o) : onePass(this.pending.map((it) => it.weights[key]!.data), this.pending.map((it) => it.w), inv, o);
      if (!(flag <= FLT_MAX)) {
        const i = o.findIndex((v) => !Number.isFinite(v));
        if (i >= 0) throw new Error(`aggregated model: tensor "${key}" is not finite at index ${i}`);
      }
      setTensor(out, key, { shape: [...info.shape], data: o, ...(info.dtype !== 'F32' ? { dtype: info.dtype } : {}) });
    }
    return out;
  }
}

/**
 * o = a·inv. Returns Σ|value| (float64): it is NaN or above FLT_MAX whenever some output is
 * not a finite float32, and then the caller scans for the culprit (a rare, slow path that
 * may also find nothing when many large values merely add up).
 */
function scale(a: Float64Array, inv: number, o: Float32Array): number {
  let flag = 0;
  for (let i = 0; i < a.length; i++) {
    const v = a[i]! * inv;
    o[i] = v;
    flag += Math.abs(v);
  }
  return flag;
}

/**
 * Σ ws[k]·ds[k][i] / total for every i, summing left to right exactly as repeated add()
 * does. Groups of four updates are summed in registers; with more than four, a block-sized
 * float64 carry holds the partial sums between groups (it stays in cache). The loops are
 * written out per case so the JIT sees no branch inside them. Exported for the coordinator's
 * streaming aggregation, which calls it on the same slice of every update (bit-identical).
 */
export function onePass(ds: Float32Array[], ws: number[], inv: number, o: Float32Array): number {
  const len = ds[0]!.length, K = ds.length;
  let flag = 0;
  const carry = new Float64Array(Math.min(BLOCK, len));
  for (let off = 0; off < len; off += BLOCK) {
    const end = Math.min(len, off + BLOCK);
    for (let k = 0; k < K; k += 4) {
      const n = Math.min(4, K - k);
      const mode = (k === 0 ? 0 : 1) + (k + n >= K ? 2 : 0); // bit0: read carry, bit1: write output
      if (n === 4) flag += group4(ds, ws, k, off, end, carry, o, inv, mode);
      else for (let j = 0; j < n; j++) flag += group1(ds[k + j]!, ws[k + j]!, off, end, carry, o, inv, (j === 0 ? mode & 1 : 1) | (j === n - 1 ? mode & 2 : 0));
    }
  }
  return flag;
}

/** Returns Σ|written value| (see scale), 0 when it wrote only the carry. */
function group4(ds: Float32Array[], ws: number[], k: number, off: number, end: number, carry: Float64Array, o: Float32Array, inv: number, mode: number): number {
  let flag = 0;
  const a = ds[k]!, b = ds[k + 1]!, c = ds[k + 2]!, d = ds[k + 3]!;
  const wa = ws[k]!, wb = ws[k + 1]!, wc = ws[k + 2]!, wd = ws[k + 3]!;
  switch (mode) {
    case 2: // first and last group: straight to the output
      for (let i = off; i < end; i++) {
        const v = (wa * a[i]! + wb * b[i]! + wc * c[i]! + wd * d[i]!) * inv;
        o[i] = v;
        flag += Math.abs(v);
      }
      break;
    case 0:
      for (let i = off; i < end; i++) carry[i - off] = wa * a[i]! + wb * b[i]! + wc * c[i]! + wd * d[i]!;
      break;
    case 1:
      for (let i = off; i < end; i++) carry[i - off] = carry[i - off]! + wa * a[i]! + wb * b[i]! + wc * c[i]! + wd * d[i]!;
      break;
    default:
      for (let i = off; i < end; i++) {
        const v = (carry[i - off]! + wa * a[i]! + wb * b[i]! + wc * c[i]! + wd * d[i]!) * inv;
        o[i] = v;
        flag += Math.abs(v);
      }
  }
  return flag;
}

function group1(a: Float32Array, wa: number, off: number, end: number, carry: Float64Array, o: Float32Array, inv: number, mode: number): number {
  let flag = 0;
  switch (mode) {
    case 2:
      for (let i = off; i < end; i++) {
        const v = wa * a[i]! * inv;
        o[i] = v;
        flag += Math.abs(v);
      }
      break;
    case 0:
      for (let i = off; i < end; i++) carry[i - off] = wa * a[i]!;
      break;
    case 1:
      for (let i = off; i < end; i++) carry[i - off] = carry[i - off]! + wa * a[i]!;
      break;
    default:
      for (let i = off; i < end; i++) {
        const v = (carry[i - off]! + wa * a[i]!) * inv;
        o[i] = v;
        flag += Math.abs(v);
      }
  }
  return flag;
}
