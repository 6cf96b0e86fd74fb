/** FedAvg (McMahan et al. 2017): the new global model is the weighted mean of the sites' models. */
import type { Weights } from '../../protocol/tensors.js';
import type { Elementwise, RoundAggregator } from '../strategy.js';
import { BaseStrategy, MeanAggregator, checkRound, readCommon, type CommonOptions } from './base.js';
import { Params } from './params.js';

export class FedAvg extends BaseStrategy {
  readonly name: string = 'FedAvg';
  constructor(common: CommonOptions) {
    super(common);
  }

  static fromParams(params: Record<string, unknown>): FedAvg {
    const p = new Params('FedAvg', params);
    const s = new FedAvg(readCommon(p));
    p.done();
    return s;
  }

  /** The weighted mean (FedProx and SCAFFOLD's server step too). */
  get elementwise(): Elementwise {
    return { kind: 'mean', weighting: this.common.weighting };
  }

  begin(round: number, global: Weights): RoundAggregator {
    checkRound(round);
    return new MeanAggregator(global, this.common.weighting, (meanY) => meanY);
  }
}
