/**
 * Coordinate-wise trimmed mean (Yin et al. 2018): per parameter, drop the ⌊β·k⌋ largest and
 * ⌊β·k⌋ smallest of the k sites' values and average the rest. β in [0, 0.5).
 */
import type { Weights } from '../../protocol/tensors.js';
import type { Elementwise, RoundAggregator } from '../strategy.js';
import { BaseStrategy, BufferingAggregator, checkRound, readCommon, type CommonOptions } from './base.js';
import { coordinateWise } from './median.js';
import { Params } from './params.js';

export class TrimmedMean extends BaseStrategy {
  readonly name = 'TrimmedMean';
  constructor(common: CommonOptions, readonly beta: number) {
    super(common);
  }

  /** Parameters: the common ones plus beta, the fraction trimmed at each end (default 0.1). */
  static fromParams(params: Record<string, unknown>): TrimmedMean {
    const p = new Params('TrimmedMean', params);
    const beta = p.number('beta', 0.1, { min: 0, maxExclusive: 0.5 });
    const s = new TrimmedMean(readCommon(p), beta);
    p.done();
    return s;
  }

  /** The mean of the k sites' sorted values of one element without the ⌊β·k⌋ at each end. */
  private trimmed(col: Float64Array, k: number): number {
    const cut = Math.floor(this.beta * k);
    let s = 0;
    for (let i = cut; i < k - cut; i++) s += col[i]!;
    return s / (k - 2 * cut);
  }

  readonly elementwise: Elementwise = { kind: 'coordinate', reduce: (col, k) => this.trimmed(col, k) };

  begin(round: number, global: Weights): RoundAggregator {
    checkRound(round);
    return new BufferingAggregator(global, (sorted) => {
      const k = sorted.length, cut = Math.floor(this.beta * k);
      const weights = coordinateWise(sorted, global, (col) => this.trimmed(col, k));
      return { weights, metrics: { sites: k, examples: sorted.reduce((a, r) => a + r.numExamples, 0), trimmedPerSide: cut } };
    });
  }
}
