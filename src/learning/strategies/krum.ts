/**
 * Krum (Blanchard et al. 2017): with k updates of which at most f are Byzantine, each
 * update's score is the sum of squared distances to its k − f − 2 nearest other updates;
 * the update with the lowest score becomes the new model. Needs k ≥ 2f + 3.
 * Ties in score go to the smaller site id, so the choice does not depend on arrival order.
 */
import { cloneWeights, type Weights } from '../../protocol/tensors.js';
import type { FitResult, RobustSelection, RoundAggregator } from '../strategy.js';
import { BaseStrategy, BufferingAggregator, checkRound, readCommon, type CommonOptions } from './base.js';
import { Params } from './params.js';
import { sqDist } from '../weights.js';

/** Krum scores of sorted results (index-aligned). */
export function krumScores(results: readonly FitResult[], f: number): number[] {
  const k = results.length;
  checkKrumSites(k, f);
  const d: number[][] = Array.from({ length: k }, () => new Array<number>(k).fill(0));
  for (let i = 0; i < k; i++) {
    for (let j = i + 1; j < k; j++) d[i]![j] = d[j]![i] = sqDist(results[i]!.weights, results[j]!.weights);
  }
  return scoresFromDistances(d, f);
}

export function checkKrumSites(k: number, f: number): void {
  if (k < 2 * f + 3) throw new Error(`Krum: ${k} updates cannot tolerate ${f} Byzantine site(s); need at least ${2 * f + 3}`);
}

/** Each update's score from the symmetric matrix of squared distances (the coordinator's streamed path sums them by slice). */
export function scoresFromDistances(d: readonly (readonly number[])[], f: number): number[] {
  const m = d.length - f - 2;
  return d.map((row, i) => row.filter((_, j) => j !== i).sort((a, b) => a - b).slice(0, m).reduce((a, b) => a + b, 0));
}

/** Indices of the `m` lowest scores (stable: equal scores keep site-id order). */
export function selectLowest(scores: number[], m: number): number[] {
  return scores.map((s, i) => [s, i] as const).sort((a, b) => a[0] - b[0] || a[1] - b[1]).slice(0, m).map(([, i]) => i);
}

export class Krum extends BaseStrategy {
  readonly name: string = 'Krum';
  constructor(common: CommonOptions, readonly byzantine: number) {
    super(common);
  }

  /** Parameters: the common ones plus byzantine f (default 1). */
  static fromParams(params: Record<string, unknown>): Krum {
    const p = new Params('Krum', params);
    const f = p.number('byzantine', 1, { integer: true, min: 0 });
    const s = new Krum(readCommon(p), f);
    p.done();
    return s;
  }

  /** One update, the lowest-scored, copied (a mean of one, equally weighted: the same values). */
  get robustSelection(): RobustSelection {
    return { byzantine: this.byzantine, weighting: 'equal', select: () => 1 };
  }

  begin(round: number, global: Weights): RoundAggregator {
    checkRound(round);
    return new BufferingAggregator(global, (sorted) => {
      const [best] = selectLowest(krumScores(sorted, this.byzantine), 1);
      const chosen = sorted[best!]!;
      return { weights: cloneWeights(chosen.weights), metrics: { sites: sorted.length, examples: chosen.numExamples, selected: 1 } };
    });
  }
}
