/**
 * The client side of federated learning (what a site runs for one task) and the central
 * trainer used for the Pooled and Local baselines.
 *
 * `fit` makes k local optimisation steps from the global weights on the site's own
 * BatchStream, optionally with FedProx's proximal term or SCAFFOLD's correction
 * (FLamby's variant, whose state lives entirely on the client). Client state is plain
 * Weights so a site agent can persist it with the safetensors codec.
 */
import { emptyWeights, setTensor, type Weights } from '../protocol/tensors.js';
import { BatchStream } from './batches.js';
import { createOptimizer } from './optim.js';
import { createRng, deriveSeed } from './rng.js';
import type { Dataset, EvalMetrics, FitConfig, Model, OptimizerSpec, Rng } from './types.js';
import { assertSameLayout, cloneWeights, fillZero, zerosLike } from './weights.js';

/**
 * Persistent per-client state as named tensors: for SCAFFOLD, `control.<p>` (c_k) and
 * `prevLocal.<p>` (ŷ_k, the model this client returned last time). Empty for other algorithms.
 */
export type ClientState = Weights;

export interface FitInput {
  model: Model;
  /** Global weights at the start of the round (not modified). */
  weights: Weights;
  data: Dataset;
  config: FitConfig;
  stream: BatchStream;
  clientState?: ClientState;
  /** Drives stochastic layers (dropout); not used for batch order, which the stream owns. */
  rng?: Rng;
}

export interface FitOutput {
  weights: Weights;
  /** Training examples at this site: the weight FedAvg gives this update. */
  numExamples: number;
  /** Mean data loss over the local steps (without proximal/correction terms). */
  loss: number;
  steps: number;
  clientState?: ClientState;
}

/** SCAFFOLD is requested through FitConfig.extra: { scaffold: true, serverLr: ηs }. */
export function scaffoldParams(config: FitConfig): { serverLr: number } | null {
  const e = config.extra;
  if (!e || e['scaffold'] !== true) return null;
  const serverLr = e['serverLr'] ?? 1;
  if (typeof serverLr !== 'number' || !(serverLr > 0)) throw new Error(`scaffold: extra.serverLr must be a number > 0, got ${String(serverLr)}`);
  return { serverLr };
}

/** Number of local steps a config asks for, given the stream's batches per epoch. */
export function stepsFor(config: FitConfig, batchesPerEpoch: number): number {
  if (config.localSteps !== undefined) {
    if (!(Number.isInteger(config.localSteps) && config.localSteps > 0)) throw new Error(`fit: localSteps must be a positive integer, got ${config.localSteps}`);
    return config.localSteps;
  }
  if (config.epochs !== undefined) {
    if (!(Number.isInteger(config.epochs) && config.epochs > 0)) throw new Error(`fit: epochs must be a positive integer, got ${config.epochs}`);
    return config.epochs * batchesPerEpoch;
  }
  throw new Error('fit: config needs localSteps or epochs');
}

export function fit(input: FitInput): FitOutput {
  const { model, data, config, stream } = input;
  const x = input.weights;
  if (stream.n !== data.n) throw new Error(`fit: stream covers ${stream.n} rows but the dataset has ${data.n}`);
  if (config.batchSize !== undefined && stream.state().batchSize !== config.batchSize) {
    throw new Error(`fit: stream batch size ${stream.state().batchSize} differs from config.batchSize ${config.batchSize}`);
  }
  const steps = stepsFor(config, stream.batchesPerEpoch);
  const mu = config.proximalMu ?? 0;
  if (!(mu >= 0)) throw new Error(`fit: proximalMu must be >= 0, got ${mu}`);
  const scaffold = scaffoldParams(config);
  if (scaffold && config.optimizer.kind !== 'sgd') throw new Error('scaffold: the FLamby variant assumes plain SGD on the client');

  const w = cloneWeights(x);
  const g = zerosLike(x);
  const opt = createOptimizer(config.optimizer);

  // SCAFFOLD (FLamby): c_k += (x − ŷ_k) / (ηs ηl K) before training; steps use ∇ − c_k.
  let control: Weights | null = null;
  if (scaffold) {
    const prev = input.clientState ? splitState(input.clientState, x) : null;
    control = prev ? prev.control : zerosLike(x);
    const prevLocal = prev ? prev.prevLocal : x; // ŷ_k starts at x0, so the first correction is 0
    const denom = scaffold.serverLr * config.optimizer.lr * steps;
    for (const k of Object.keys(x)) {
      const c = control[k]!.data, xs = x[k]!.data, yp = prevLocal[k]!.data;
      for (let i = 0; i < c.length; i++) c[i] = c[i]! + Math.fround(xs[i]! - yp[i]!) / denom;
    }
  }

  let lossSum = 0;
  for (let s = 0; s < steps; s++) {
    const idx = stream.next();
    fillZero(g);
    lossSum += model.lossAndGrad(w, data, idx, g, input.rng);
    if (mu > 0) {
      // ∇ (μ/2)‖w − x‖² = μ (w − x)
      for (const k of Object.keys(w)) {
        const gd = g[k]!.data, wd = w[k]!.data, xd = x[k]!.data;
        for (let i = 0; i < gd.length; i++) gd[i] = gd[i]! + mu * (wd[i]! - xd[i]!);
      }
    }
    if (control) {
      for (const k of Object.keys(w)) {
        const gd = g[k]!.data, c = control[k]!.data;
        for (let i = 0; i < gd.length; i++) gd[i] = gd[i]! - c[i]!;
      }
    }
    opt.step(w, g);
  }

  let clientState: ClientState | undefined;
  if (scaffold && control) {
    // y_k ← ηs y_k + (1 − ηs) x ; ŷ_k ← y_k
    const eta = scaffold.serverLr;
    if (eta !== 1) {
      for (const k of Object.keys(w)) {
        const wd = w[k]!.data, xd = x[k]!.data;
        for (let i = 0; i < wd.length; i++) wd[i] = eta * wd[i]! + (1 - eta) * xd[i]!;
      }
    }
    clientState = joinState(control, w);
  }
  return { weights: w, numExamples: data.n, loss: lossSum / steps, steps, ...(clientState ? { clientState } : {}) };
}

function joinState(control: Weights, prevLocal: Weights): ClientState {
  const out: ClientState = emptyWeights();
  for (const [k, t] of Object.entries(control)) setTensor(out, `control.${k}`, { shape: [...t.shape], data: new Float32Array(t.data) });
  for (const [k, t] of Object.entries(prevLocal)) setTensor(out, `prevLocal.${k}`, { shape: [...t.shape], data: new Float32Array(t.data) });
  return out;
}

function splitState(st: ClientState, like: Weights): { control: Weights; prevLocal: Weights } {
  const control = emptyWeights(), prevLocal = emptyWeights();
  for (const k of Object.keys(like)) {
    const c = st[`control.${k}`], p = st[`prevLocal.${k}`];
    if (!c || !p) throw new Error(`scaffold: client state lacks "control.${k}" or "prevLocal.${k}"`);
    setTensor(control, k, { shape: [...c.shape], data: new Float32Array(c.data) });
    setTensor(prevLocal, k, p);
  }
  assertSameLayout(like, control, 'scaffold control');
  assertSameLayout(like, prevLocal, 'scaffold prevLocal');
  return { control, prevLocal };
}

export function evaluate(model: Model, weights: Weights, data: Dataset): EvalMetrics {
  return model.evaluate(weights, data);
}

export interface CentralInput {
  model: Model;
  weights: Weights;
  data: Dataset;
  epochs: number;
  batchSize: number;
  optimizer: OptimizerSpec;
  seed: number;
  rng?: Rng;
}

/**
 * Central training for the Pooled and Local baselines: `epochs` passes, each reshuffled,
 * last partial batch kept (DataLoader(shuffle=True) semantics), one optimiser for the run.
 */
export function trainCentral(input: CentralInput): { weights: Weights; loss: number } {
  const { model, data, batchSize, epochs } = input;
  if (!(Number.isInteger(epochs) && epochs > 0)) throw new Error(`trainCentral: epochs must be a positive integer, got ${epochs}`);
  const stream = BatchStream.create(data.n, batchSize, deriveSeed(input.seed, 'central'));
  const w = cloneWeights(input.weights);
  const g = zerosLike(w);
  const opt = createOptimizer(input.optimizer);
  const rng = input.rng ?? createRng(input.seed, 'central-dropout');
  const steps = epochs * stream.batchesPerEpoch;
  let lastEpochLoss = 0;
  for (let s = 0; s < steps; s++) {
    const idx = stream.next();
    fillZero(g);
    const l = model.lossAndGrad(w, data, idx, g, rng);
    if (s >= steps - stream.batchesPerEpoch) lastEpochLoss += l / stream.batchesPerEpoch;
    opt.step(w, g);
  }
  return { weights: w, loss: lastEpochLoss };
}
