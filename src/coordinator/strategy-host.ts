/**
 * Puts a study's strategy to work for the round engine: builds it from the study spec (the study's
 * `fit` block supplies the client settings every strategy reads), restores its saved state, and
 * adapts results arriving from the wire to the strategy's contract.
 */
import type { StudySpec, ResultMeta } from '../protocol/api.js';
import type { Weights } from '../protocol/tensors.js';
import { createStrategy } from '../learning/strategies/registry.js';
import type { Strategy, StrategyState } from '../learning/strategy.js';
import type { FitConfig } from '../learning/types.js';

export interface FitResultIn {
  siteId: string;
  weights: Weights;
  numExamples: number;
  meta: ResultMeta;
}

export interface HostedStrategy {
  strategy: Strategy;
  configureFit(round: number, sites: string[]): { siteId: string; config: FitConfig }[];
  aggregateFit(round: number, global: Weights, results: FitResultIn[]): Weights;
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

export function hostStrategy(spec: StudySpec, state?: StrategyState): HostedStrategy {
  const strategy = createStrategy(spec.strategy.name, strategyParams(spec));
  if (state) strategy.setState(state);
  return {
    strategy,
    configureFit(round, sites) {
      // Global weights are not needed to choose sites; strategies that do need them read them in begin().
      return strategy.configureFit(round, {}, sites).map((t) => ({
        siteId: t.siteId,
        config: { ...spec.fit, ...t.config, optimizer: { ...spec.fit.optimizer, ...t.config.optimizer } },
      }));
    },
    aggregateFit(round, global, results) {
      return strategy.aggregateFit(
        round,
        global,
        results.map((r) => ({ siteId: r.siteId, weights: r.weights, numExamples: r.numExamples, ...(r.meta.trainMetrics?.['loss'] !== undefined ? { loss: r.meta.trainMetrics['loss'] } : {}) })),
      ).weights;
    },
    getState: () => strategy.getState(),
  };
}
