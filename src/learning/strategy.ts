/**
 * The Strategy contract: what the coordinator's round engine (and the in-process benchmark
 * and simulator) call, in the spirit of Flower's four methods.
 *
 *   configureFit(round, global, sites)    → which sites train this round, and with what FitConfig
 *   begin(round, global).add(r)…finish()  → streaming aggregation of the round's updates
 *   aggregateFit(round, global, results)  → the same, all results at once (any order)
 *   configureEvaluate / aggregateEvaluate → the same pair for evaluation
 *   getState / setState                   → everything the strategy carries between rounds
 *                                           (server optimiser moments, momentum…), so a
 *                                           restarted coordinator continues exactly
 *
 * Rounds are numbered from 1. A strategy never does I/O. Its only mutable state is what
 * getState returns, and it changes only in `finish()` (and `aggregateFit`), so a coordinator
 * that commits the new weights and the new state in one transaction never sees them disagree.
 */
import type { Weights } from '../protocol/tensors.js';
import type { EvalMetrics, FitConfig } from './types.js';

export interface FitTask {
  siteId: string;
  config: FitConfig;
}

/** One site's answer to a FitTask. */
export interface FitResult {
  siteId: string;
  /** The site's new local weights y_k (not the delta). */
  weights: Weights;
  /** Training examples behind the update (FedAvg's weight). */
  numExamples: number;
  /** Mean local training loss, if reported. */
  loss?: number;
}

export interface EvaluateResult {
  siteId: string;
  metrics: EvalMetrics;
}

export interface AggregateOutput {
  weights: Weights;
  /** Round-level numbers for dashboards: sites, examples, weighted train loss… */
  metrics: Record<string, number>;
}

/** Receives one round's updates as they arrive; memory does not grow with their number for FedAvg-like strategies. */
export interface RoundAggregator {
  add(result: FitResult): void;
  /** Updates added so far. */
  readonly count: number;
  /** New global weights; also advances the strategy's state. Call once. */
  finish(): AggregateOutput;
}

/** Serialisable strategy state: JSON for scalars, named float32 tensors for vectors. */
export interface StrategyState {
  json: unknown;
  tensors: Weights;
}

/**
 * A strategy's aggregate when it is computed element by element from the sites' values of that element alone, so a
 * coordinator can aggregate a large model slice by slice without holding the updates (coordinator/stream-aggregate.ts):
 *  - `mean`: Σ w_k y_k / Σ w_k with w_k the example count (or 1 for `equal`), summed in float64 left to right over
 *    the sites sorted by id, scaled by 1/Σ w_k and rounded to float32 once: exactly what MeanAggregator computes.
 *  - `coordinate`: `reduce` of the sites' values of one element, sorted ascending (Median, TrimmedMean).
 * Strategies with server state of model size (FedAvgM, FedAdam, …) or pairwise distances (Krum) have none: they
 * describe themselves with `ServerStep` and `RobustSelection` instead, which stream too.
 */
export type Elementwise =
  | { kind: 'mean'; weighting: 'examples' | 'equal' }
  | { kind: 'coordinate'; reduce: (sortedColumn: Float64Array, sites: number) => number };

/**
 * A server optimiser's step (FedAvgM, FedAdam, FedYogi, FedAdagrad): the round's weighted mean y of the sites' models
 * (the `mean` of Elementwise, rounded to float32), then per element x' = step(x, y, moments), where the moments are
 * float32 vectors of the model's layout carried from round to round (zero before the first). Element i of the result
 * and of the new moments depends on element i alone, so the coordinator applies it slice by slice with the moments
 * in blobs (coordinator/stream-server-opt.ts). The in-memory strategy calls the same `apply` on whole tensors, so
 * both paths compute the same bits.
 */
export interface ServerStep {
  readonly weighting: 'examples' | 'equal';
  /** Names of the moment vectors, in the order `apply` takes them (FedAdam: m, v; FedAvgM: v). */
  readonly moments: readonly string[];
  /**
   * x: the global model's values, y: the round's mean, moments: the previous moments (overwritten with the new
   * ones), o: the new model's values (float32, not yet rounded to the tensor's dtype). All of one length.
   */
  apply(x: Float32Array, y: Float32Array, moments: readonly Float32Array[], o: Float32Array): void;
}

/**
 * Krum and Multi-Krum: each update scored by the sum of squared distances (float64, over the whole update) to its
 * `k − byzantine − 2` nearest others, the `select(k)` lowest (ties to the smaller site id) averaged with `weighting`
 * (Krum: one, copied). Needs only the pairwise distances, which the coordinator sums slice by slice
 * (coordinator/stream-krum.ts), then the chosen updates' mean, streamed like FedAvg's.
 */
export interface RobustSelection {
  readonly byzantine: number;
  readonly weighting: 'examples' | 'equal';
  /** How many of k updates are averaged. */
  select(k: number): number;
}

export interface Strategy {
  readonly name: string;
  /** Present when the aggregate is elementwise (see Elementwise); its state does not change in a round then. */
  readonly elementwise?: Elementwise;
  /** Present on server optimisers whose step is elementwise on the round's mean (see ServerStep). */
  readonly serverStep?: ServerStep;
  /** Present on Krum and Multi-Krum (see RobustSelection). */
  readonly robustSelection?: RobustSelection;
  configureFit(round: number, global: Weights, sites: readonly string[]): FitTask[];
  begin(round: number, global: Weights): RoundAggregator;
  aggregateFit(round: number, global: Weights, results: readonly FitResult[]): AggregateOutput;
  /** Sites asked to evaluate the global model after `round`. */
  configureEvaluate(round: number, global: Weights, sites: readonly string[]): string[];
  /** Example-weighted means of the sites' metrics (n, loss, accuracy, auc, cIndex). */
  aggregateEvaluate(round: number, results: readonly EvaluateResult[]): Record<string, number>;
  getState(): StrategyState;
  setState(state: StrategyState): void;
}

/** Thrown by configureFit when fewer sites are available than the strategy needs. */
export class NotEnoughSitesError extends Error {
  constructor(readonly needed: number, readonly available: number) {
    super(`strategy needs at least ${needed} site(s) for this round but only ${available} are available`);
    this.name = 'NotEnoughSitesError';
  }
}
