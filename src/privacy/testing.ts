/** Small helpers shared by this folder's tests (not exported from the package's public surface). */
import type { Weights } from '../protocol/tensors.js';
import type { Dataset, EvalMetrics, Model, ModelSpec, Rng } from '../learning/types.js';

/**
 * Least-squares linear model y ≈ x·w + b, loss ½(ŷ − y)² averaged over rows. Enough for testing DP-SGD
 * without depending on the learning core's models (privacy may import learning types only).
 */
export class TinyLinear implements Model {
  readonly spec: ModelSpec;
  constructor(readonly d: number) { this.spec = { kind: 'logistic', inputDim: d }; }
  init(_rng: Rng): Weights {
    return { w: { shape: [this.d], data: new Float32Array(this.d) }, b: { shape: [1], data: new Float32Array(1) } };
  }
  lossAndGrad(w: Weights, data: Dataset, idx: ArrayLike<number>, grad: Weights): number {
    const wd = w.w!.data, b = w.b!.data[0]!, gw = grad.w!.data, gb = grad.b!.data;
    let loss = 0;
    for (let k = 0; k < idx.length; k++) {
      const i = idx[k]!;
      let p = b;
      for (let j = 0; j < this.d; j++) p += data.x[i * this.d + j]! * wd[j]!;
      const r = p - data.y[i]!;
      loss += 0.5 * r * r;
      for (let j = 0; j < this.d; j++) gw[j] = gw[j]! + (r * data.x[i * this.d + j]!) / idx.length;
      gb[0] = gb[0]! + r / idx.length;
    }
    return loss / idx.length;
  }
  predict(w: Weights, data: Dataset): Float32Array {
    const out = new Float32Array(data.n);
    for (let i = 0; i < data.n; i++) {
      let p = w.b!.data[0]!;
      for (let j = 0; j < this.d; j++) p += data.x[i * this.d + j]! * w.w!.data[j]!;
      out[i] = p;
    }
    return out;
  }
  evaluate(w: Weights, data: Dataset): EvalMetrics {
    const idx = Array.from({ length: data.n }, (_, i) => i);
    return { n: data.n, loss: this.lossAndGrad(w, data, idx, this.init(null as unknown as Rng)) };
  }
}

export function seedBytes(label: string): Uint8Array {
  const b = new Uint8Array(32);
  for (let i = 0; i < label.length; i++) b[i % 32] = (b[i % 32]! * 31 + label.charCodeAt(i)) & 0xff;
  b[31] = label.length & 0xff;
  return b;
}

export function flat(w: Weights): number[] {
  return Object.values(w).flatMap((t) => Array.from(t.data));
}
