/**
 * Puts a study's strategy to work for the round engine: builds it from the study spec (the study's
 * `fit` block supplies the client settings every strategy reads), restores its saved state, and
 * adapts results arriving from the wire to the strategy's contract.
 *
 * Privacy is composed around it, not branched inside the engine (the shape of Flower's
 * DifferentialPrivacyServerSideFixedClipping wrapper and SecAgg+ workflow): when a study is loaded the engine
 * wraps the hosted strategy in client-level DP-FedAvg (coordinator/privacy.ts `clientLevelDp`) and, outermost,
 * SecAgg+ (coordinator/secagg.ts `secAggPlus`), which turns the round's unmasked sum into what the layer inside
 * takes. Every layer is a `HostedStrategy`, so the engine's commit is the same for every study.
 */
import type { StudySpec, ResultMeta } from '../protocol/api.js';
import type { Weights } from '../protocol/tensors.js';
import { createStrategy, STRATEGY_NAMES } from '../learning/strategies/registry.js';
import type { Elementwise, RobustSelection, ServerStep, Strategy, StrategyState } from '../learning/strategy.js';
import type { FitConfig } from '../learning/types.js';
import type { ClientDp } from './stream-dp.js';

export interface FitResultIn {
  siteId: string;
  weights: Weights;
  numExamples: number;
  meta: ResultMeta;
}

/** What a fit round hands its strategy: each site's result and how many sites were asked. */
export interface FitInput {
  /** Per site; `weights` is empty when the updates arrived masked (SecAgg+: only their sum exists). */
  results: FitResultIn[];
  /** Sites asked this round (its tasks): client-level DP divides by this fixed number. */
  asked: number;
}

/** A global metric of the round that a layer adds (how a SecAgg+ round went). */
export interface RoundMetric {
  phase: string;
  name: string;
  value: number;
}

export interface HostedStrategy {
  strategy: Strategy;
  configureFit(round: number, sites: string[]): { siteId: string; config: FitConfig }[];
  aggregateFit(round: number, global: Weights, input: FitInput): Weights;
  /**
   * Present on layers that aggregate from the sum of the sites' deltas alone (client-level DP-FedAvg); a
   * layer holding only such a sum (SecAgg+) calls it instead of `aggregateFit`.
   */
  aggregateSum?(round: number, global: Weights, sum: Weights, input: FitInput): Weights;
  /**
   * Present when the whole stack aggregates elementwise (the hosted strategy alone: a privacy layer hides it), so
   * the engine streams the round from the update blobs (stream-aggregate.ts) instead of calling aggregateFit.
   */
  elementwise?: Elementwise;
  /**
   * Present on the SecAgg+ layer over a plain mean (FedAvg, FedProx alone): the round's new version is unmasked
   * and averaged block by block from the masked inputs' blobs (stream-secagg.ts) with this kernel.
   */
  secaggMean?: Elementwise;
  /** Present, like `elementwise`, when the stack is a server optimiser alone: streamed by stream-server-opt.ts. */
  serverStep?: ServerStep;
  /** Present, like `elementwise`, when the stack is Krum or Multi-Krum alone: streamed by stream-krum.ts. */
  robustSelection?: RobustSelection;
  /**
   * Present on the client-level DP-FedAvg layer (privacy.ts clientLevelDp): its central-noise aggregate is streamed by
   * stream-dp.ts when every update's blob is at hand (not under SecAgg+, whose one sum has none).
   */
  clientDp?: ClientDp;
  /**
   * Present when the strategy's next version is its one site's model (Cyclic): the round streams that update's
   * tensors into the new version (fit-aggregate.ts) instead of decoding it.
   */
  takesOne?: true;
  /**
   * The server optimiser's moments as the streamed path saved them (a blob per moment, by name), instead of
   * tensors in the strategy's own state; absent before the first streamed round.
   */
  momentBlobs?: Record<string, string>;
  /** Global metrics of the round this layer adds, read after aggregation. */
  roundMetrics?(round: number): RoundMetric[];
  getState(): StrategyState;
}

/** The strategy parameters implied by the study's fit block, overridden by explicit strategy params. */
export function strategyParams(spec: StudySpec): Record<string, unknown> {
  const f = spec.fit;
  return {
    lr: f.optimizer.lr,
    optimizer: f.optimizer.kind,
    ...(f.optimizer.momentum ? { momentum: f.optimizer.momentum } : {}),
    ...(f.epochs !== undefined ? { epochs: f.epochs } : { localSteps: f.localSteps ?? 100 }),
    batchSize: f.batchSize,
    seed: spec.seed ?? 42,
    ...(f.proximalMu !== undefined && spec.strategy.name.toLowerCase() === 'fedprox' ? { mu: f.proximalMu } : {}),
    ...(spec.strategy.params ?? {}),
  };
}

/** How a strategy's round can be aggregated from the update blobs slice by slice, at any model size, if it can. */
export function streamedKind(s: Strategy): 'elementwise' | 'serverStep' | 'robustSelection' | 'takesOne' | undefined {
  return s.elementwise ? 'elementwise' : s.serverStep ? 'serverStep' : s.robustSelection ? 'robustSelection' : s.name === 'Cyclic' ? 'takesOne' : undefined;
}

/**
 * The strategies whose rounds the coordinator streams from the update blobs at any model size (without a client-level
 * DP layer): what study-model.ts admits over IN_MEMORY_AGGREGATION_MAX_BYTES and what the engine streams (the hooks
 * hostStrategy passes on are those of these strategies only): Cyclic as a copy of its one site's update
 * (HostedStrategy.takesOne). Client-level DP-FedAvg around FedAvg streams as its own layer (clientDp).
 */
export const STREAMED_STRATEGIES: readonly string[] = STRATEGY_NAMES.filter((n) => streamedKind(createStrategy(n)) !== undefined);

/** The saved state's moment blobs, when the streamed server step wrote it (stream-server-opt.ts). */
export function momentBlobsOf(state: StrategyState | undefined): Record<string, string> | undefined {
  const j = state?.json as { momentBlobs?: Record<string, string> } | undefined;
  return j && typeof j === 'object' && j.momentBlobs && typeof j.momentBlobs === 'object' ? j.momentBlobs : undefined;
}

export function hostStrategy(spec: StudySpec, state?: StrategyState): HostedStrategy {
  const strategy = createStrategy(spec.strategy.name, strategyParams(spec));
  const momentBlobs = momentBlobsOf(state);
  // Moments in blobs are read slice by slice by the streamed step; the strategy itself starts without them.
  if (state && !momentBlobs) strategy.setState(state);
  if (momentBlobs && (state!.json as { strategy?: unknown }).strategy !== strategy.name) throw new Error(`setState: state belongs to strategy ${JSON.stringify((state!.json as { strategy?: unknown }).strategy)}, not "${strategy.name}"`);
  const streamed = STREAMED_STRATEGIES.includes(strategy.name);
  const host: HostedStrategy = {
    strategy,
    ...(streamed && strategy.elementwise ? { elementwise: strategy.elementwise } : {}),
    ...(streamed && strategy.serverStep ? { serverStep: strategy.serverStep } : {}),
    ...(streamed && strategy.robustSelection ? { robustSelection: strategy.robustSelection } : {}),
    ...(momentBlobs ? { momentBlobs } : {}),
    ...(streamed && streamedKind(strategy) === 'takesOne' ? { takesOne: true as const } : {}),
    configureFit(round, sites) {
      // Global weights are not needed to choose sites; strategies that do need them read them in begin().
      return strategy.configureFit(round, {}, sites).map((t) => ({
        siteId: t.siteId,
        config: { ...spec.fit, ...t.config, optimizer: { ...spec.fit.optimizer, ...t.config.optimizer } },
      }));
    },
    aggregateFit(round, global, { results }) {
      const bare = results.find((r) => Object.keys(r.weights).length === 0);
      if (bare) throw new Error(`round ${round}: the result of site ${bare.siteId} carries no weights for ${spec.strategy.name} to aggregate`);
      return strategy.aggregateFit(
        round,
        global,
        results.map((r) => ({ siteId: r.siteId, weights: r.weights, numExamples: r.numExamples, ...(r.meta.trainMetrics?.['loss'] !== undefined ? { loss: r.meta.trainMetrics['loss'] } : {}) })),
      ).weights;
    },
    // After a streamed server step the moments live in blobs (stream-server-opt.ts): the state names them.
    getState: () => (host.momentBlobs ? { json: { strategy: strategy.name, started: true, momentBlobs: host.momentBlobs }, tensors: {} } : strategy.getState()),
  };
  return host;
}
