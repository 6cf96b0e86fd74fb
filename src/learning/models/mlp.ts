/**
 * Multi-layer perceptron for binary tasks (sigmoid output, binary cross-entropy), and the
 * stack of fully connected layers behind it (`DenseNet`), which the Cox model reuses for
 * its linear or MLP risk score.
 *
 * Layer k maps sizes[k] → sizes[k+1] and is stored as `layers.k.weight` [out, in] and
 * `layers.k.bias` [out] — the layout of PyTorch's `nn.Linear`, so a state dict of linear
 * layers maps onto it by renaming only. The activation (and inverted dropout, when asked)
 * follows every layer except the last, whose output is the raw score (a logit or log-risk).
 *
 * Arithmetic is float64 on a batch of rows gathered from the float32 dataset; gradients are
 * summed in float64 and added into the caller's float32 `grad` once per tensor.
 */
import { tensor, type Weights } from '../../protocol/tensors.js';
import type { Dataset, EvalMetrics, Model, ModelSpec, Rng } from '../types.js';
import { binaryMetrics } from '../metrics.js';
import { bceWithLogit, sigmoid } from './logistic.js';

export type Activation = 'relu' | 'tanh';

/** Everything the backward pass needs from one forward pass over a batch of B rows. */
export interface DensePass {
  rows: number;
  /** acts[k] is the B × sizes[k] input of layer k (acts[0] = the gathered features). */
  acts: Float64Array[];
  /** deriv[k] (k ≥ 1) is ∂acts[k]/∂preactivation, dropout mask and scale included. */
  deriv: Float64Array[];
  /** B × sizes[L] raw output of the last layer. */
  out: Float64Array;
}

interface LayerView {
  W: Float32Array;
  b: Float32Array;
}

export function layerName(k: number, part: 'weight' | 'bias'): string {
  return `layers.${k}.${part}`;
}

export class DenseNet {
  readonly sizes: readonly number[];

  /**
   * @param who model name used in error messages
   * @param dropout probability of zeroing a hidden unit during training, in [0, 1)
   */
  constructor(
    sizes: readonly number[],
    readonly activation: Activation,
    readonly dropout: number,
    private readonly who: string,
  ) {
    if (sizes.length < 2) throw new Error(`${who}: a network needs at least an input and an output size`);
    for (const s of sizes) if (!(Number.isInteger(s) && s > 0)) throw new Error(`${who}: layer sizes must be positive integers, got [${sizes}]`);
    if (activation !== 'relu' && activation !== 'tanh') throw new Error(`${who}: activation must be "relu" or "tanh", got ${String(activation)}`);
    if (!(dropout >= 0 && dropout < 1)) throw new Error(`${who}: dropout must be in [0, 1), got ${dropout}`);
    this.sizes = [...sizes];
  }

  get layerCount(): number {
    return this.sizes.length - 1;
  }

  /**
   * PyTorch's default `nn.Linear` initialisation: kaiming_uniform(a=√5) for the weight, which
   * works out to U(−1/√fan_in, 1/√fan_in), and the same bound for the bias. Draw order: layer
   * by layer, weight (row-major) then bias.
   */
  init(rng: Rng): Weights {
    const w: Weights = {};
    for (let k = 0; k < this.layerCount; k++) {
      const fin = this.sizes[k]!, fout = this.sizes[k + 1]!;
      const bound = 1 / Math.sqrt(fin);
      const W = new Float32Array(fout * fin);
      for (let i = 0; i < W.length; i++) W[i] = (2 * rng.next() - 1) * bound;
      const b = new Float32Array(fout);
      for (let i = 0; i < fout; i++) b[i] = (2 * rng.next() - 1) * bound;
      w[layerName(k, 'weight')] = tensor([fout, fin], W);
      w[layerName(k, 'bias')] = tensor([fout], b);
    }
    return w;
  }

  /** Looks up and checks every layer's tensors; a clear error names the first bad one. */
  private view(w: Weights): LayerView[] {
    const out: LayerView[] = [];
    for (let k = 0; k < this.layerCount; k++) {
      const fin = this.sizes[k]!, fout = this.sizes[k + 1]!;
      const W = w[layerName(k, 'weight')], b = w[layerName(k, 'bias')];
      if (!W || !b) throw new Error(`${this.who}: weights lack "${layerName(k, W ? 'bias' : 'weight')}"`);
      if (W.data.length !== fout * fin) throw new Error(`${this.who}: "${layerName(k, 'weight')}" has shape [${W.shape}], expected [${fout},${fin}]`);
      if (b.data.length !== fout) throw new Error(`${this.who}: "${layerName(k, 'bias')}" has shape [${b.shape}], expected [${fout}]`);
      out.push({ W: W.data, b: b.data });
    }
    return out;
  }

  /**
   * Forward pass over `rows` of the row-major feature matrix `x` (width sizes[0]).
   * Dropout is applied only when `rng` is given and the dropout rate is positive (training);
   * masks are drawn row by row, unit by unit, layer by layer, so a fixed seed gives a fixed mask.
   */
  forward(w: Weights, x: Float32Array, rows: ArrayLike<number>, rng?: Rng): DensePass {
    const layers = this.view(w);
    const B = rows.length, d = this.sizes[0]!;
    const a0 = new Float64Array(B * d);
    for (let r = 0; r < B; r++) {
      const src = rows[r]! * d;
      for (let j = 0; j < d; j++) a0[r * d + j] = x[src + j]!;
    }
    const acts: Float64Array[] = [a0];
    const deriv: Float64Array[] = [new Float64Array(0)];
    const drop = rng && this.dropout > 0 ? this.dropout : 0;
    const keepScale = 1 / (1 - drop);
    let out: Float64Array = a0;
    for (let k = 0; k < this.layerCount; k++) {
      const { W, b } = layers[k]!;
      const fin = this.sizes[k]!, fout = this.sizes[k + 1]!;
      const z = affine(acts[k]!, B, fin, W, b, fout);
      if (k === this.layerCount - 1) {
        out = z;
        break;
      }
      const dz = new Float64Array(z.length);
      for (let i = 0; i < z.length; i++) {
        let a: number, g: number;
        if (this.activation === 'relu') {
          a = z[i]! > 0 ? z[i]! : 0;
          g = z[i]! > 0 ? 1 : 0;
        } else {
          a = Math.tanh(z[i]!);
          g = 1 - a * a;
        }
        if (drop > 0) {
          // Inverted dropout: kept units are scaled by 1/(1−p) so inference needs no rescaling.
          const keep = rng!.next() >= drop ? keepScale : 0;
          a *= keep;
          g *= keep;
        }
        z[i] = a;
        dz[i] = g;
      }
      acts.push(z);
      deriv.push(dz);
    }
    return { rows: B, acts, deriv, out };
  }

  /** Adds ∂L/∂w into `grad`, given dOut = ∂L/∂out (B × sizes[L]). */
  backward(w: Weights, pass: DensePass, dOut: Float64Array, grad: Weights): void {
    const layers = this.view(w);
    const B = pass.rows;
    let delta: Float64Array = dOut;
    for (let k = this.layerCount - 1; k >= 0; k--) {
      const fin = this.sizes[k]!, fout = this.sizes[k + 1]!;
      const input = pass.acts[k]!;
      const gW = new Float64Array(fout * fin), gb = new Float64Array(fout);
      for (let r = 0; r < B; r++) {
        for (let o = 0; o < fout; o++) {
          const g = delta[r * fout + o]!;
          if (g === 0) continue;
          gb[o]! += g;
          const wo = o * fin, io = r * fin;
          for (let i = 0; i < fin; i++) gW[wo + i]! += g * input[io + i]!;
        }
      }
      addInto(grad, layerName(k, 'weight'), gW, this.who);
      addInto(grad, layerName(k, 'bias'), gb, this.who);
      if (k === 0) break;
      // Propagate to the previous layer's output, then through its activation (and mask).
      const W = layers[k]!.W, dAct = pass.deriv[k]!;
      const prev = new Float64Array(B * fin);
      for (let r = 0; r < B; r++) {
        for (let o = 0; o < fout; o++) {
          const g = delta[r * fout + o]!;
          if (g === 0) continue;
          const wo = o * fin, po = r * fin;
          for (let i = 0; i < fin; i++) prev[po + i]! += g * W[wo + i]!;
        }
      }
      for (let i = 0; i < prev.length; i++) prev[i]! *= dAct[i]!;
      delta = prev;
    }
  }

  /** Inference-mode scores (no dropout) for every row of `x`, in chunks to bound memory. */
  scores(w: Weights, x: Float32Array, n: number): Float64Array {
    const out = new Float64Array(n * this.sizes[this.layerCount]!);
    const chunk = 4096;
    for (let start = 0; start < n; start += chunk) {
      const end = Math.min(n, start + chunk);
      const rows = new Uint32Array(end - start);
      for (let r = 0; r < rows.length; r++) rows[r] = start + r;
      const pass = this.forward(w, x, rows);
      out.set(pass.out, start * this.sizes[this.layerCount]!);
    }
    return out;
  }
}

/** z = A·Wᵀ + b for A (B × fin) and W (fout × fin). */
function affine(A: Float64Array, B: number, fin: number, W: Float32Array, b: Float32Array, fout: number): Float64Array {
  const z = new Float64Array(B * fout);
  for (let r = 0; r < B; r++) {
    const ao = r * fin;
    for (let o = 0; o < fout; o++) {
      const wo = o * fin;
      let s = b[o]!;
      for (let i = 0; i < fin; i++) s += A[ao + i]! * W[wo + i]!;
      z[r * fout + o] = s;
    }
  }
  return z;
}

function addInto(grad: Weights, name: string, g: Float64Array, who: string): void {
  const t = grad[name];
  if (!t || t.data.length !== g.length) throw new Error(`${who}: grad lacks "${name}" or has the wrong size`);
  const d = t.data;
  for (let i = 0; i < g.length; i++) d[i]! += g[i]!;
}

export type MlpSpec = Extract<ModelSpec, { kind: 'mlp' }>;

/**
 * Binary classifier: hidden layers with ReLU or tanh (and inverted dropout while training),
 * one output logit, p = sigmoid(logit), loss = mean BCE over the batch.
 */
export class Mlp implements Model {
  readonly spec: MlpSpec;
  readonly net: DenseNet;

  constructor(spec: MlpSpec) {
    if (!(Number.isInteger(spec.inputDim) && spec.inputDim > 0)) throw new Error(`mlp: inputDim must be a positive integer, got ${spec.inputDim}`);
    if (!Array.isArray(spec.hidden)) throw new Error('mlp: hidden must be an array of layer widths');
    this.spec = { ...spec, hidden: [...spec.hidden] };
    this.net = new DenseNet([spec.inputDim, ...spec.hidden, 1], spec.activation, spec.dropout ?? 0, 'mlp');
  }

  init(rng: Rng): Weights {
    return this.net.init(rng);
  }

  private checkData(data: Dataset): void {
    if (data.d !== this.spec.inputDim) throw new Error(`mlp: data has ${data.d} features, model expects ${this.spec.inputDim}`);
  }

  lossAndGrad(w: Weights, data: Dataset, idx: ArrayLike<number>, grad: Weights, rng?: Rng): number {
    this.checkData(data);
    const m = idx.length;
    if (m === 0) return 0;
    const pass = this.net.forward(w, data.x, idx, rng);
    const dOut = new Float64Array(m);
    let loss = 0;
    for (let k = 0; k < m; k++) {
      const z = pass.out[k]!, t = data.y[idx[k]!]!;
      loss += bceWithLogit(z, t);
      dOut[k] = (sigmoid(z) - t) / m; // d(mean BCE)/dz
    }
    this.net.backward(w, pass, dOut, grad);
    return loss / m;
  }

  predict(w: Weights, data: Dataset): Float32Array {
    this.checkData(data);
    const z = this.net.scores(w, data.x, data.n);
    const p = new Float32Array(data.n);
    for (let r = 0; r < data.n; r++) p[r] = sigmoid(z[r]!);
    return p;
  }

  evaluate(w: Weights, data: Dataset): EvalMetrics {
    this.checkData(data);
    const z = this.net.scores(w, data.x, data.n);
    const p = new Float64Array(data.n);
    let loss = 0;
    for (let r = 0; r < data.n; r++) {
      loss += bceWithLogit(z[r]!, data.y[r]!);
      p[r] = sigmoid(z[r]!);
    }
    const m = binaryMetrics(p, data.y);
    return { n: data.n, loss: data.n ? loss / data.n : 0, accuracy: m.accuracy, auc: m.auc };
  }
}
