/**
 * Logistic regression: p = sigmoid(x·w + b), binary cross-entropy averaged over the batch.
 *
 * Weight names and shapes follow PyTorch's `nn.Linear(d, 1)`: `weight` [1, d] and `bias` [1],
 * so a PyTorch state dict maps onto them directly. Arithmetic inside a batch is float64
 * (the per-row logit and the gradient sums); weights are stored as float32.
 */
import { tensor, type Weights } from '../../protocol/tensors.js';
import type { Dataset, EvalMetrics, Model, ModelSpec, Rng } from '../types.js';
import { binaryMetrics } from '../metrics.js';

/** log(1 + e^z) without overflow. */
export function softplus(z: number): number {
  return z > 0 ? z + Math.log1p(Math.exp(-z)) : Math.log1p(Math.exp(z));
}

export function sigmoid(z: number): number {
  if (z >= 0) return 1 / (1 + Math.exp(-z));
  const e = Math.exp(z);
  return e / (1 + e);
}

/**
 * BCE of a logit z against label y, computed as softplus(z) − y·z, which equals
 * −[y log σ(z) + (1−y) log(1−σ(z))] but stays finite for any z. (PyTorch's BCELoss on
 * probabilities clamps each log at −100; that only matters for |z| > 100, which a
 * well-posed model never reaches.)
 */
export function bceWithLogit(z: number, y: number): number {
  return softplus(z) - y * z;
}

export class LogisticRegression implements Model {
  readonly spec: ModelSpec;
  readonly d: number;

  constructor(inputDim: number) {
    if (!(Number.isInteger(inputDim) && inputDim > 0)) throw new Error(`logistic: inputDim must be a positive integer, got ${inputDim}`);
    this.d = inputDim;
    this.spec = { kind: 'logistic', inputDim };
  }

  /** PyTorch Linear default: weight and bias both U(−1/√fan_in, 1/√fan_in). */
  init(rng: Rng): Weights {
    const bound = 1 / Math.sqrt(this.d);
    const w = new Float32Array(this.d);
    for (let i = 0; i < this.d; i++) w[i] = (2 * rng.next() - 1) * bound;
    const b = new Float32Array([(2 * rng.next() - 1) * bound]);
    return { weight: tensor([1, this.d], w), bias: tensor([1], b) };
  }

  private check(w: Weights, data: Dataset): { wv: Float32Array; b: number } {
    const wt = w['weight'], bt = w['bias'];
    if (!wt || !bt) throw new Error('logistic: weights need "weight" and "bias"');
    if (wt.data.length !== this.d || bt.data.length !== 1) throw new Error(`logistic: weight shape [${wt.shape}] / bias [${bt.shape}] do not match inputDim ${this.d}`);
    if (data.d !== this.d) throw new Error(`logistic: data has ${data.d} features, model expects ${this.d}`);
    return { wv: wt.data, b: bt.data[0]! };
  }

  /** Logit of row r. */
  private logit(wv: Float32Array, b: number, x: Float32Array, r: number): number {
    const d = this.d, off = r * d;
    let z = b;
    for (let j = 0; j < d; j++) z += wv[j]! * x[off + j]!;
    return z;
  }

  lossAndGrad(w: Weights, data: Dataset, idx: ArrayLike<number>, grad: Weights, _rng?: Rng): number {
    const { wv, b } = this.check(w, data);
    const gw = grad['weight']!.data, gb = grad['bias']!.data;
    const m = idx.length;
    if (m === 0) return 0;
    const d = this.d, x = data.x, y = data.y;
    // Accumulate in float64 and add into the float32 grad once, so the sum does not round per row.
    const acc = new Float64Array(d);
    let accB = 0, loss = 0;
    for (let k = 0; k < m; k++) {
      const r = idx[k]!;
      const z = this.logit(wv, b, x, r);
      const t = y[r]!;
      loss += bceWithLogit(z, t);
      const g = sigmoid(z) - t; // dL/dz for BCE∘sigmoid
      const off = r * d;
      for (let j = 0; j < d; j++) acc[j]! += g * x[off + j]!;
      accB += g;
    }
    for (let j = 0; j < d; j++) gw[j]! += acc[j]! / m;
    gb[0]! += accB / m;
    return loss / m;
  }

  predict(w: Weights, data: Dataset): Float32Array {
    const { wv, b } = this.check(w, data);
    const out = new Float32Array(data.n);
    for (let r = 0; r < data.n; r++) out[r] = sigmoid(this.logit(wv, b, data.x, r));
    return out;
  }

  evaluate(w: Weights, data: Dataset): EvalMetrics {
    const { wv, b } = this.check(w, data);
    const p = new Float64Array(data.n);
    let loss = 0;
    for (let r = 0; r < data.n; r++) {
      const z = this.logit(wv, b, data.x, r);
      loss += bceWithLogit(z, data.y[r]!);
      p[r] = sigmoid(z);
    }
    const m = binaryMetrics(p, data.y);
    return { n: data.n, loss: data.n ? loss / data.n : 0, accuracy: m.accuracy, auc: m.auc };
  }
}
