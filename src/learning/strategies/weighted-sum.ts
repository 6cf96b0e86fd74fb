/**
 * Streaming weighted mean of model updates: Σ w_k y_k / Σ w_k, accumulated in float64 and
 * rounded to float32 once at the end. Memory is one float64 buffer per tensor (twice the
 * model), whatever the number of sites. `addMany` computes the same sums block by block
 * (cache-friendly) when all updates are at hand; it adds in the same order as repeated
 * `add`, so both paths give bit-identical results.
 */
import { layoutMismatch, layoutOf, type Weights, type WeightsLayout } from '../../protocol/tensors.js';

/** Elements per block in addMany: 4096 float64 = 32 KiB, fits L1/L2 beside the inputs. */
const BLOCK = 4096;

export class WeightedSum {
  private readonly layout: WeightsLayout;
  private readonly keys: string[];
  private readonly acc: Float64Array[];
  private total = 0;
  private n = 0;

  constructor(like: Weights) {
    this.layout = layoutOf(like);
    this.keys = Object.keys(like);
    this.acc = this.keys.map((k) => new Float64Array(like[k]!.data.length));
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
    for (let t = 0; t < this.keys.length; t++) {
      const a = this.acc[t]!, d = y[this.keys[t]!]!.data;
      if (this.n === 0) for (let i = 0; i < a.length; i++) a[i] = w * d[i]!;
      else for (let i = 0; i < a.length; i++) a[i] = a[i]! + w * d[i]!;
    }
    this.total += w;
    this.n++;
  }

  /** Same result as calling add() for each item in order; faster for many large updates. */
  addMany(items: ReadonlyArray<{ weights: Weights; w: number; who?: string }>): void {
    items.forEach((it) => this.check(it.weights, it.w, it.who ?? 'update'));
    const first = this.n === 0;
    for (let t = 0; t < this.keys.length; t++) {
      const a = this.acc[t]!, key = this.keys[t]!, len = a.length;
      const datas = items.map((it) => it.weights[key]!.data), ws = items.map((it) => it.w);
      for (let off = 0; off < len; off += BLOCK) {
        const end = Math.min(len, off + BLOCK);
        for (let k = 0; k < datas.length; k++) {
          const d = datas[k]!, w = ws[k]!;
          if (k === 0 && first) for (let i = off; i < end; i++) a[i] = w * d[i]!;
          else for (let i = off; i < end; i++) a[i] = a[i]! + w * d[i]!;
        }
      }
    }
    for (const it of items) this.total += it.w;
    this.n += items.length;
  }

  /** The weighted mean as float32 Weights. */
  mean(): Weights {
    if (this.n === 0) throw new Error('aggregation: no updates to aggregate');
    const out: Weights = {};
    for (let t = 0; t < this.keys.length; t++) {
      const a = this.acc[t]!, o = new Float32Array(a.length);
      for (let i = 0; i < a.length; i++) o[i] = a[i]! / this.total;
      out[this.keys[t]!] = { shape: [...this.layout[this.keys[t]!]!], data: o };
    }
    return out;
  }
}
