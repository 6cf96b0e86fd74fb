/**
 * FedProx (Li et al. 2020): FedAvg on the server; each site adds (μ/2)‖w − x‖² to its local
 * loss, x being the global model of the round. The proximal term travels in FitConfig.
 */
import type { FitConfig } from '../types.js';
import { readCommon, type CommonOptions } from './base.js';
import { FedAvg } from './fedavg.js';
import { Params } from './params.js';

export class FedProx extends FedAvg {
  override readonly name: string = 'FedProx';
  constructor(common: CommonOptions, readonly mu: number) {
    super(common);
  }

  /** Parameters: the common ones plus mu (default 0.01, FLamby's heart value). */
  static override fromParams(params: Record<string, unknown>): FedProx {
    const p = new Params('FedProx', params);
    const mu = p.number('mu', 0.01, { min: 0 });
    const s = new FedProx(readCommon(p), mu);
    p.done();
    return s;
  }

  protected override fitConfig(round: number): FitConfig {
    return { ...super.fitConfig(round), proximalMu: this.mu };
  }
}
