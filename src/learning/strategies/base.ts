/**
 * Shared machinery of the strategies: the client task template (optimiser, local steps,
 * batch size), client sampling, weighting, evaluation, and the FedAvg-style round in which
 * the sorted or streamed results are reduced to a weighted mean.
 */
import { layoutMismatch, layoutOf, type Weights } from '../../protocol/tensors.js';
import { compareIds, sampleSites, type SamplingOptions } from '../sampling.js';
import type {
  AggregateOutput, EvaluateResult, FitResult, FitTask, RoundAggregator, Strategy, StrategyState,
} from '../strategy.js';
import type { FitConfig } from '../types.js';
import { Params } from './params.js';
import { WeightedSum } from './weighted-sum.js';

export type Weighting = 'examples' | 'equal';

/** Options every strategy accepts (see `readCommon` for names and defaults). */
export interface CommonOptions {
  fit: FitConfig;
  sampling: SamplingOptions;
  weighting: Weighting;
  /** Fraction of sites asked to evaluate after a round (1 = all). */
  fractionEvaluate: number;
}

/**
 * Common parameters: lr (0.001), optimizer ("sgd"|"adam", "sgd"), momentum (0), localSteps
 * (100) or epochs, batchSize (4), fraction (1), minSites (1), sites (all), weighting
 * ("examples"), fractionEvaluate (1), seed (0). The defaults are FLamby's heart protocol.
 */
export function readCommon(p: Params): CommonOptions {
  const lr = p.number('lr', 0.001, { minExclusive: 0 });
  const optimizer = p.choice('optimizer', 'sgd', ['sgd', 'adam'] as const);
  const momentum = p.number('momentum', 0, { min: 0, maxExclusive: 1 });
  const epochs = p.optionalInt('epochs', 1);
  const localStepsRaw = p.optionalInt('localSteps', 1);
  if (epochs !== undefined && localStepsRaw !== undefined) throw new Error(`${p.strategy}: give either "localSteps" or "epochs", not both`);
  const batchSize = p.number('batchSize', 4, { integer: true, min: 1 });
  const fraction = p.number('fraction', 1, { minExclusive: 0, max: 1 });
  const minSites = p.number('minSites', 1, { integer: true, min: 1 });
  const sites = p.stringList('sites');
  const weighting = p.choice('weighting', 'examples', ['examples', 'equal'] as const);
  const fractionEvaluate = p.number('fractionEvaluate', 1, { min: 0, max: 1 });
  const seed = p.number('seed', 0, { integer: true });
  const fit: FitConfig = {
    ...(epochs !== undefined ? { epochs } : { localSteps: localStepsRaw ?? 100 }),
    batchSize,
    optimizer: optimizer === 'sgd' ? { kind: 'sgd', lr, ...(momentum ? { momentum } : {}) } : { kind: 'adam', lr },
  };
  return { fit, sampling: { fraction, minSites, ...(sites ? { sites } : {}), seed }, weighting, fractionEvaluate };
}

export function checkRound(round: number): void {
  if (!(Number.isInteger(round) && round >= 1)) throw new Error(`round must be an integer >= 1, got ${round}`);
}

/** A result's weight in the mean. */
export function weightOf(r: FitResult, weighting: Weighting): number {
  if (!(Number.isInteger(r.numExamples) && r.numExamples > 0)) throw new Error(`site "${r.siteId}": numExamples must be a positive integer, got ${r.numExamples}`);
  return weighting === 'examples' ? r.numExamples : 1;
}

/** Refuses a second result from the same site in one round. */
export class SiteSet {
  private seen = new Set<string>();
  add(siteId: string): void {
    if (typeof siteId !== 'string' || !siteId) throw new Error('result without a siteId');
    if (this.seen.has(siteId)) throw new Error(`site "${siteId}" sent two results for the same round`);
    this.seen.add(siteId);
  }
}

export function assertFinite(w: Weights, what: string): void {
  for (const [k, t] of Object.entries(w)) {
    const d = t.data;
    for (let i = 0; i < d.length; i++) if (!Number.isFinite(d[i]!)) throw new Error(`${what}: tensor "${k}" is not finite at index ${i}`);
  }
}

export abstract class BaseStrategy implements Strategy {
  abstract readonly name: string;
  constructor(protected readonly common: CommonOptions) {}

  /** The FitConfig sent to every sampled site (strategies add proximalMu / extra). */
  protected fitConfig(_round: number): FitConfig {
    return this.common.fit;
  }

  configureFit(round: number, _global: Weights, sites: readonly string[]): FitTask[] {
    checkRound(round);
    const cfg = this.fitConfig(round);
    return sampleSites(round, sites, this.common.sampling).map((siteId) => ({ siteId, config: cfg }));
  }

  abstract begin(round: number, global: Weights): RoundAggregator;

  /** All of a round's results at once; sorted by site id first, so arrival order cannot matter. */
  aggregateFit(round: number, global: Weights, results: readonly FitResult[]): AggregateOutput {
    const agg = this.begin(round, global);
    const sorted = [...results].sort((a, b) => compareIds(a.siteId, b.siteId));
    if (agg instanceof MeanAggregator) agg.addAll(sorted);
    else for (const r of sorted) agg.add(r);
    return agg.finish();
  }

  configureEvaluate(round: number, _global: Weights, sites: readonly string[]): string[] {
    checkRound(round);
    const f = this.common.fractionEvaluate;
    if (f === 0) return [];
    return sampleSites(round, sites, { fraction: f, minSites: 1, seed: this.common.sampling.seed ^ 0x5eed });
  }

  aggregateEvaluate(_round: number, results: readonly EvaluateResult[]): Record<string, number> {
    return weightedMetrics(results);
  }

  getState(): StrategyState {
    return { json: { strategy: this.name }, tensors: {} };
  }

  setState(state: StrategyState): void {
    checkStateName(state, this.name);
  }
}

export function checkStateName(state: StrategyState, name: string): Record<string, unknown> {
  const j = state?.json as Record<string, unknown> | undefined;
  if (!j || typeof j !== 'object' || j['strategy'] !== name) {
    throw new Error(`setState: state belongs to strategy ${JSON.stringify(j?.['strategy'])}, not "${name}"`);
  }
  return j;
}

/** Example-weighted mean of each metric over the sites that reported it. */
export function weightedMetrics(results: readonly EvaluateResult[]): Record<string, number> {
  const sorted = [...results].sort((a, b) => compareIds(a.siteId, b.siteId));
  const out: Record<string, number> = { sites: sorted.length };
  let n = 0;
  const sums = new Map<string, [number, number]>();
  for (const r of sorted) {
    const m = r.metrics;
    n += m.n;
    for (const key of ['loss', 'accuracy', 'auc', 'cIndex'] as const) {
      const v = m[key];
      if (v === undefined || !Number.isFinite(v)) continue;
      const s = sums.get(key) ?? [0, 0];
      s[0] += v * m.n;
      s[1] += m.n;
      sums.set(key, s);
    }
  }
  out['n'] = n;
  for (const [k, [s, w]] of sums) if (w > 0) out[k] = s / w;
  return out;
}

/**
 * The FedAvg-family round: a streaming weighted mean of the sites' weights y_k, handed to
 * `finishMean` (which turns mean y into the new global, e.g. through a server optimiser).
 */
export class MeanAggregator implements RoundAggregator {
  private readonly sum: WeightedSum;
  private readonly sites = new SiteSet();
  private lossSum = 0;
  private lossWeight = 0;
  private examples = 0;
  private done = false;

  constructor(
    global: Weights,
    private readonly weighting: Weighting,
    private readonly finishMean: (meanY: Weights) => Weights,
  ) {
    this.sum = new WeightedSum(global);
  }

  get count(): number {
    return this.sum.count;
  }

  private note(r: FitResult): number {
    if (this.done) throw new Error('aggregation already finished');
    this.sites.add(r.siteId);
    const w = weightOf(r, this.weighting);
    this.examples += r.numExamples;
    if (r.loss !== undefined && Number.isFinite(r.loss)) {
      this.lossSum += r.loss * r.numExamples;
      this.lossWeight += r.numExamples;
    }
    return w;
  }

  add(r: FitResult): void {
    const w = this.note(r);
    this.sum.add(r.weights, w, `site "${r.siteId}"`);
  }

  addAll(rs: readonly FitResult[]): void {
    const items = rs.map((r) => ({ weights: r.weights, w: this.note(r), who: `site "${r.siteId}"` }));
    this.sum.addMany(items);
  }

  finish(): AggregateOutput {
    if (this.done) throw new Error('aggregation already finished');
    this.done = true;
    const mean = this.sum.mean(); // refuses a non-finite mean itself
    const weights = this.finishMean(mean);
    if (weights !== mean) assertFinite(weights, 'aggregated model');
    const metrics: Record<string, number> = { sites: this.sum.count, examples: this.examples };
    if (this.lossWeight > 0) metrics['trainLoss'] = this.lossSum / this.lossWeight;
    return { weights, metrics };
  }
}

/** Buffers a round's results (robust strategies need them all); sorted by site id on finish. */
export class BufferingAggregator implements RoundAggregator {
  private readonly results: FitResult[] = [];
  private readonly sites = new SiteSet();
  private done = false;

  constructor(
    private readonly global: Weights,
    private readonly reduce: (sorted: FitResult[], global: Weights) => AggregateOutput,
  ) {}

  get count(): number {
    return this.results.length;
  }

  add(r: FitResult): void {
    if (this.done) throw new Error('aggregation already finished');
    this.sites.add(r.siteId);
    weightOf(r, 'examples'); // validates numExamples
    const msg = layoutMismatch(r.weights, layoutOf(this.global));
    if (msg) throw new Error(`site "${r.siteId}": ${msg}`);
    this.results.push(r);
  }

  finish(): AggregateOutput {
    if (this.done) throw new Error('aggregation already finished');
    this.done = true;
    if (this.results.length === 0) throw new Error('aggregation: no updates to aggregate');
    const sorted = [...this.results].sort((a, b) => compareIds(a.siteId, b.siteId));
    const out = this.reduce(sorted, this.global);
    assertFinite(out.weights, 'aggregated model');
    return out;
  }
}

