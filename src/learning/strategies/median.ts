/**
 * Coordinate-wise median (Yin et al. 2018): each parameter of the new model is the median
 * of the sites' values (mean of the two middle ones for an even count). Robust to a minority
 * of faulty or hostile sites; ignores example counts by design. Buffers the round's updates.
 */
import { mapWeights, tensorLike, type Weights } from '../../protocol/tensors.js';
import type { Elementwise, FitResult, RoundAggregator } from '../strategy.js';
import { BaseStrategy, BufferingAggregator, checkRound, readCommon, type CommonOptions } from './base.js';
import { Params } from './params.js';

/** Per coordinate: gathers the k values, sorts them, and calls `reduce` on the sorted column. */
export function coordinateWise(results: readonly FitResult[], global: Weights, reduce: (sorted: Float64Array) => number): Weights {
  const col = new Float64Array(results.length);
  return mapWeights(Object.keys(global), (k) => {
    const t = global[k]!;
    const o = new Float32Array(t.data.length);
    const datas = results.map((r) => r.weights[k]!.data);
    for (let i = 0; i < o.length; i++) {
      for (let j = 0; j < datas.length; j++) col[j] = datas[j]![i]!;
      col.sort();
      o[i] = reduce(col);
    }
    return tensorLike(t, o);
  });
}

export function medianOfSorted(s: Float64Array): number {
  const n = s.length, h = n >> 1;
  return n % 2 ? s[h]! : (s[h - 1]! + s[h]!) / 2;
}

export class Median extends BaseStrategy {
  readonly name = 'Median';
  static fromParams(params: Record<string, unknown>): Median {
    const p = new Params('Median', params);
    const s = new Median(readCommon(p));
    p.done();
    return s;
  }

  constructor(common: CommonOptions) {
    super(common);
  }

  readonly elementwise: Elementwise = { kind: 'coordinate', reduce: medianOfSorted };

  begin(round: number, global: Weights): RoundAggregator {
    checkRound(round);
    return new BufferingAggregator(global, (sorted) => ({
      weights: coordinateWise(sorted, global, medianOfSorted),
      metrics: { sites: sorted.length, examples: sorted.reduce((a, r) => a + r.numExamples, 0) },
    }));
  }
}
