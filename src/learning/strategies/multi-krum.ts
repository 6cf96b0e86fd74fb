/**
 * Multi-Krum (Blanchard et al. 2017): the m updates with the lowest Krum scores are averaged
 * (weighted by examples or equally, as configured). m = k − f when not given.
 */
import type { Weights } from '../../protocol/tensors.js';
import type { RobustSelection, RoundAggregator } from '../strategy.js';
import { BaseStrategy, BufferingAggregator, checkRound, readCommon, weightOf, type CommonOptions } from './base.js';
import { krumScores, selectLowest } from './krum.js';
import { Params } from './params.js';
import { WeightedSum } from './weighted-sum.js';

export class MultiKrum extends BaseStrategy {
  readonly name = 'MultiKrum';
  constructor(common: CommonOptions, readonly byzantine: number, readonly select?: number) {
    super(common);
  }

  /** Parameters: the common ones plus byzantine f (1) and select m (k − f). */
  static fromParams(params: Record<string, unknown>): MultiKrum {
    const p = new Params('MultiKrum', params);
    const f = p.number('byzantine', 1, { integer: true, min: 0 });
    const m = p.optionalInt('select', 1);
    const s = new MultiKrum(readCommon(p), f, m);
    p.done();
    return s;
  }

  get robustSelection(): RobustSelection {
    return { byzantine: this.byzantine, weighting: this.common.weighting, select: (k) => Math.min(k, this.select ?? k - this.byzantine) };
  }

  begin(round: number, global: Weights): RoundAggregator {
    checkRound(round);
    return new BufferingAggregator(global, (sorted) => {
      const m = this.robustSelection.select(sorted.length);
      const chosen = selectLowest(krumScores(sorted, this.byzantine), m).sort((a, b) => a - b);
      const sum = new WeightedSum(global);
      sum.addMany(chosen.map((i) => ({ weights: sorted[i]!.weights, w: weightOf(sorted[i]!, this.common.weighting) })));
      return { weights: sum.mean(), metrics: { sites: sorted.length, examples: chosen.reduce((a, i) => a + sorted[i]!.numExamples, 0), selected: m } };
    });
  }
}
