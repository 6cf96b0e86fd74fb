/**
 * FedAdam: the adaptive server rule "adam" of fedopt.ts (FLamby's formulas, no bias correction).
 * Defaults are FLamby's Fed-Heart-Disease values: server lr 0.01, client lr 0.01, β = (0.9, 0.999), τ = 1e-8.
 */
import { FedOpt, type FedOptRule } from './fedopt.js';
import { Params } from './params.js';

export class FedAdam extends FedOpt {
  readonly name = 'FedAdam';
  protected readonly rule: FedOptRule = 'adam';

  static fromParams(params: Record<string, unknown>): FedAdam {
    const p = new Params('FedAdam', { lr: 0.01, ...params });
    const { common, opt } = FedOpt.readOpt(p, { serverLr: 0.01, beta1: 0.9, beta2: 0.999, tau: 1e-8 });
    return new FedAdam(common, opt);
  }
}
