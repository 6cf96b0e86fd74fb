/**
 * Contracts of the learning core. Pure: no I/O, no HTTP, no SQL.
 * Everything here is deterministic given its seeds.
 */
import type { Weights } from '../protocol/tensors.js';
export type { Weights } from '../protocol/tensors.js';

/** A tabular dataset held in typed arrays, row-major features. */
export interface Dataset {
  /** n × d features, row-major. */
  x: Float32Array;
  n: number;
  d: number;
  /** Binary label (0/1) for classification; for survival, unused (length 0) or the event indicator. */
  y: Float32Array;
  /** Survival tasks: follow-up time and event indicator (1 = event observed). */
  time?: Float32Array;
  event?: Float32Array;
  featureNames?: string[];
}

export type ModelSpec =
  | { kind: 'logistic'; inputDim: number }
  | { kind: 'mlp'; inputDim: number; hidden: number[]; activation: 'relu' | 'tanh'; dropout?: number }
  | { kind: 'cox'; inputDim: number; hidden?: number[]; activation?: 'relu' | 'tanh'; ties?: 'none' | 'breslow'; normalise?: 'events' | 'batch' };

export interface OptimizerSpec {
  kind: 'sgd' | 'adam';
  lr: number;
  momentum?: number;
  betas?: [number, number];
  eps?: number;
}

/** What a site is asked to do in one training task. */
export interface FitConfig {
  /** Number of local optimisation steps (mini-batches). Either this or epochs. */
  localSteps?: number;
  epochs?: number;
  batchSize: number;
  optimizer: OptimizerSpec;
  /** FedProx proximal coefficient μ (0 = none). */
  proximalMu?: number;
  /** Extra per-strategy knobs carried opaquely to the client algorithm (e.g. SCAFFOLD's server lr). */
  extra?: Record<string, number | string | boolean>;
}

export interface EvalMetrics {
  n: number;
  loss: number;
  accuracy?: number;
  auc?: number;
  cIndex?: number;
}

/** Seeded pseudo-random source. Implementations must be deterministic for a given seed. */
export interface Rng {
  /** Uniform in [0, 1). */
  next(): number;
  /** Uniform 32-bit unsigned integer. */
  nextUint32(): number;
  /** Standard normal. */
  normal(): number;
}

/**
 * A differentiable model over a Dataset. Weights live outside the model so that the same
 * model object serves every site and the server.
 */
export interface Model {
  readonly spec: ModelSpec;
  /** Fresh weights (PyTorch-default-like initialisation) drawn from `rng`. */
  init(rng: Rng): Weights;
  /**
   * Mean loss over rows `idx` of `data`; adds its gradient into `grad` (same layout as `w`,
   * the caller zeroes it). `rng` drives stochastic layers (dropout) during training only.
   */
  lossAndGrad(w: Weights, data: Dataset, idx: ArrayLike<number>, grad: Weights, rng?: Rng): number;
  /** Per-row score: probability for binary models, log-risk for Cox. Inference mode (no dropout). */
  predict(w: Weights, data: Dataset): Float32Array;
  /** Metrics on the whole dataset: loss and accuracy/AUC (binary) or C-index (survival). */
  evaluate(w: Weights, data: Dataset): EvalMetrics;
}
