/**
 * Cyclic weight transfer (Chang et al. 2018): each round ONE site trains the current global
 * model and its result becomes the next global model. Sites are visited in cycles; with
 * `deterministic: false` (FLamby's default) each cycle is a fresh seeded permutation of the
 * sorted site ids, so a restarted coordinator visits the same sequence.
 *
 * The site of round r depends on (seed, cycle, the set of sites), so as long as the set of
 * sites is stable no state needs saving; the cycle's order is recomputed from its seed.
 */
import { cloneWeights, type Weights } from '../../protocol/tensors.js';
import { createRng, permutation } from '../rng.js';
import { compareIds } from '../sampling.js';
import { NotEnoughSitesError, type AggregateOutput, type FitResult, type FitTask, type RoundAggregator } from '../strategy.js';
import { BaseStrategy, BufferingAggregator, checkRound, readCommon, type CommonOptions } from './base.js';
import { Params } from './params.js';

export class Cyclic extends BaseStrategy {
  readonly name = 'Cyclic';
  constructor(common: CommonOptions, readonly deterministic: boolean) {
    super(common);
  }

  /** Parameters: the common ones (fraction/minSites do not apply: one site per round) plus deterministic (false). */
  static fromParams(params: Record<string, unknown>): Cyclic {
    const { deterministic, ...rest } = params;
    if (deterministic !== undefined && typeof deterministic !== 'boolean') throw new Error(`Cyclic: parameter "deterministic" must be true or false, got ${JSON.stringify(deterministic)}`);
    const p = new Params('Cyclic', rest);
    const s = new Cyclic(readCommon(p), deterministic ?? false);
    p.done();
    return s;
  }

  /** The site that trains in `round` (1-based) among `sites`. */
  siteFor(round: number, sites: readonly string[]): string {
    checkRound(round);
    const pool = this.common.sampling.sites ? [...this.common.sampling.sites] : [...new Set(sites)];
    pool.sort(compareIds);
    if (pool.length === 0) throw new NotEnoughSitesError(1, 0);
    const cycle = Math.floor((round - 1) / pool.length), pos = (round - 1) % pool.length;
    if (this.deterministic) return pool[pos]!;
    const perm = permutation(pool.length, createRng(this.common.sampling.seed, 'cyclic', cycle));
    return pool[perm[pos]!]!;
  }

  override configureFit(round: number, _global: Weights, sites: readonly string[]): FitTask[] {
    const siteId = this.siteFor(round, sites);
    if (this.common.sampling.sites && !sites.includes(siteId)) throw new NotEnoughSitesError(1, 0);
    return [{ siteId, config: this.fitConfig(round) }];
  }

  begin(round: number, global: Weights): RoundAggregator {
    checkRound(round);
    return new BufferingAggregator(global, (sorted: FitResult[]): AggregateOutput => {
      if (sorted.length !== 1) throw new Error(`Cyclic: round ${round} expects exactly one result, got ${sorted.length}`);
      const r = sorted[0]!;
      return { weights: cloneWeights(r.weights), metrics: { sites: 1, examples: r.numExamples, ...(r.loss !== undefined ? { trainLoss: r.loss } : {}) } };
    });
  }
}
