/**
 * Cox proportional hazards with a linear or MLP log-risk score f(x).
 *
 * Loss: the negative partial log-likelihood of the batch, divided by its observed events E
 * (`normalise: 'events'`, the default, as pycox and DeepSurv) or by its rows m (`'batch'`, as FLamby's
 * Fed-TCGA-BRCA `BaselineLoss`),
 *
 *     L = (1/E or 1/m) Σ_{i: event} [ log Σ_{j ∈ R(i)} exp f(x_j) − f(x_i) ],
 *
 * with the log-sum-exp taken by a running maximum, so it is finite for any finite scores:
 * huge scores, a single row, or an all-censored batch (E = 0: loss 0, gradient 0).
 *
 * Risk sets R(i), for `ties`:
 * - 'none' (default, FLamby's `BaselineLoss` of Fed-TCGA-BRCA): rows are stably sorted by
 *   time, latest first, and R(i) is every row at or before i in that order. Rows with equal
 *   times are therefore not grouped: among tied rows, the one earlier in the batch does not
 *   see the later ones in its risk set. Dividing by m instead of E rescales loss and gradient
 *   by E/m; the mean over events is the quantity that does not drift with the censoring rate.
 * - 'breslow': R(i) = every row with t_j ≥ t_i, ties included (Breslow's approximation).
 *
 * The output layer keeps PyTorch's bias so the layout equals `nn.Linear` stacks; the partial
 * likelihood does not depend on it (its gradient is exactly 0), so training leaves it alone.
 */
import type { Weights } from '../../protocol/tensors.js';
import type { Dataset, EvalMetrics, Model, ModelSpec, Rng } from '../types.js';
import { concordance } from '../metrics/cindex.js';
import { DenseNet, layerName } from './mlp.js';
import { torchLinearInit } from '../torch-init.js';

export type CoxSpec = Extract<ModelSpec, { kind: 'cox' }>;
export type CoxTies = 'none' | 'breslow';
export type CoxNormalise = 'events' | 'batch';

/**
 * Cox loss of batch-local `score`, `time`, `event` (event > 0.5 = observed). When `dScore` is
 * given (same length), ∂L/∂score is added into it. Returns the loss.
 */
export function coxLoss(
  score: ArrayLike<number>,
  time: ArrayLike<number>,
  event: ArrayLike<number>,
  ties: CoxTies = 'none',
  dScore?: Float64Array,
  normalise: CoxNormalise = 'events',
): number {
  const m = score.length;
  if (time.length !== m || event.length !== m) throw new Error(`cox: ${m} scores, ${time.length} times, ${event.length} events`);
  let events = 0;
  for (let i = 0; i < m; i++) if (event[i]! > 0.5) events++;
  if (events === 0) return 0;
  const denom = normalise === 'batch' ? m : events;
  // Stable sort (ECMAScript guarantees it): ties keep batch order, as Python's sorted does.
  const order = Array.from({ length: m }, (_, i) => i).sort((a, b) => time[b]! - time[a]!);
  // riskEnd[p]: last position (in `order`) belonging to the risk set of the row at position p.
  const riskEnd = new Int32Array(m);
  for (let p = 0; p < m; ) {
    let q = p;
    if (ties === 'breslow') while (q + 1 < m && time[order[q + 1]!] === time[order[p]!]) q++;
    for (let k = p; k <= q; k++) riskEnd[k] = ties === 'breslow' ? q : k;
    p = q + 1;
  }
  // prefix[p] = log Σ_{k ≤ p} exp(score[order[k]]), by a running max so nothing overflows.
  const prefix = new Float64Array(m);
  let mx = -Infinity, sum = 0;
  for (let p = 0; p < m; p++) {
    const s = score[order[p]!]!;
    if (s > mx) {
      sum = sum * Math.exp(mx - s) + 1;
      mx = s;
    } else sum += Math.exp(s - mx);
    prefix[p] = mx + Math.log(sum);
  }
  let loss = 0;
  for (let p = 0; p < m; p++) {
    const i = order[p]!;
    if (event[i]! > 0.5) loss += prefix[riskEnd[p]!]! - score[i]!;
  }
  if (dScore) {
    // ∂L/∂s_j = (1/denom) [ Σ_{events i: j ∈ R(i)} exp(s_j − lse_i) − e_j ]. j ∈ R(i) iff
    // pos(j) ≤ riskEnd(pos(i)), so walk positions backwards, adding each event when the walk
    // reaches its riskEnd, and keep acc = log Σ exp(−lse_i) over those events. Every term
    // exp(s_j + acc) is a sum of ratios ≤ 1, so it cannot overflow.
    const byEnd: number[][] = Array.from({ length: m }, () => []);
    for (let p = 0; p < m; p++) if (event[order[p]!]! > 0.5) byEnd[riskEnd[p]!]!.push(p);
    let accMax = -Infinity, accSum = 0;
    for (let p = m - 1; p >= 0; p--) {
      for (const q of byEnd[p]!) {
        const v = -prefix[riskEnd[q]!]!;
        if (v > accMax) {
          accSum = accSum * Math.exp(accMax - v) + 1;
          accMax = v;
        } else accSum += Math.exp(v - accMax);
      }
      const j = order[p]!;
      const inRisk = accSum > 0 ? Math.exp(score[j]! + accMax + Math.log(accSum)) : 0;
      dScore[j]! += (inRisk - (event[j]! > 0.5 ? 1 : 0)) / denom;
    }
  }
  return loss / denom;
}

export class Cox implements Model {
  readonly spec: CoxSpec;
  readonly net: DenseNet;
  readonly ties: CoxTies;
  readonly normalise: CoxNormalise;

  constructor(spec: CoxSpec) {
    if (!(Number.isInteger(spec.inputDim) && spec.inputDim > 0)) throw new Error(`cox: inputDim must be a positive integer, got ${spec.inputDim}`);
    const hidden = spec.hidden ?? [];
    if (!Array.isArray(hidden)) throw new Error('cox: hidden must be an array of layer widths');
    const ties = spec.ties ?? 'none';
    if (ties !== 'none' && ties !== 'breslow') throw new Error(`cox: ties must be "none" or "breslow", got ${String(ties)}`);
    this.ties = ties;
    const normalise = spec.normalise ?? 'events';
    if (normalise !== 'events' && normalise !== 'batch') throw new Error(`cox: normalise must be "events" or "batch", got ${String(normalise)}`);
    this.normalise = normalise;
    this.spec = { ...spec, hidden: [...hidden] };
    this.net = new DenseNet([spec.inputDim, ...hidden, 1], spec.activation ?? 'relu', 0, 'cox');
  }

  init(rng: Rng): Weights {
    return this.net.init(rng);
  }

  private survival(data: Dataset): { time: Float32Array; event: Float32Array } {
    if (data.d !== this.spec.inputDim) throw new Error(`cox: data has ${data.d} features, model expects ${this.spec.inputDim}`);
    const time = data.time, event = data.event;
    if (!time || !event || time.length !== data.n || event.length !== data.n) throw new Error('cox: dataset needs `time` and `event` arrays of length n');
    return { time, event };
  }

  lossAndGrad(w: Weights, data: Dataset, idx: ArrayLike<number>, grad: Weights, rng?: Rng): number {
    const { time, event } = this.survival(data);
    const m = idx.length;
    if (m === 0) return 0;
    const pass = this.net.forward(w, data.x, idx, rng);
    const t = new Float64Array(m), e = new Float64Array(m);
    for (let k = 0; k < m; k++) {
      t[k] = time[idx[k]!]!;
      e[k] = event[idx[k]!]!;
    }
    const dOut = new Float64Array(m);
    const loss = coxLoss(pass.out, t, e, this.ties, dOut, this.normalise);
    this.net.backward(w, pass, dOut, grad);
    return loss;
  }

  /** Log-risk f(x) of every row. */
  predict(w: Weights, data: Dataset): Float32Array {
    if (data.d !== this.spec.inputDim) throw new Error(`cox: data has ${data.d} features, model expects ${this.spec.inputDim}`);
    return Float32Array.from(this.net.scores(w, data.x, data.n));
  }

  /** Whole-dataset partial likelihood (normalised as in training) and Harrell's C (absent without comparable pairs). */
  evaluate(w: Weights, data: Dataset): EvalMetrics {
    const { time, event } = this.survival(data);
    const s = this.net.scores(w, data.x, data.n);
    const loss = coxLoss(s, time, event, this.ties, undefined, this.normalise);
    const c = concordance(s, time, event);
    return Number.isNaN(c.cIndex) ? { n: data.n, loss } : { n: data.n, loss, cIndex: c.cIndex };
  }
}

/**
 * A linear Cox model's weights as `torch.manual_seed(seed); nn.Linear(d, 1)` draws them, under the
 * model's layer names, so a Setu Cox study starts where a PyTorch reference does (the bias is drawn,
 * and kept, but the partial likelihood ignores it).
 */
export function linearCoxTorchInit(seed: number, inputDim: number): Weights {
  const { weight, bias } = torchLinearInit(seed, inputDim, 1);
  return { [layerName(0, 'weight')]: weight!, [layerName(0, 'bias')]: bias! };
}

/** Hazard ratio exp(β_j) per feature of a linear Cox model: the change in hazard per unit of feature j (as encoded and normalised). */
export function coxHazardRatios(w: Weights, featureNames?: readonly string[]): Array<{ feature: string; coef: number; hazardRatio: number }> {
  const W = w[layerName(0, 'weight')];
  if (!W || W.shape[0] !== 1 || w[layerName(1, 'weight')]) throw new Error('cox: hazard ratios need a linear Cox model (no hidden layers)');
  return Array.from(W.data, (b, j) => ({ feature: featureNames?.[j] ?? `x${j}`, coef: b, hazardRatio: Math.exp(b) }));
}
