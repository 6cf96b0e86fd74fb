/**
 * FedYogi: the adaptive server rule "yogi" of fedopt.ts (FLamby's formulas, no bias correction).
 * Defaults are FLamby's Fed-Heart-Disease values: server lr 0.01, client lr 0.003162, β = (0.9, 0.999), τ = 1e-8.
 */
import { FedOpt, type FedOptRule } from './fedopt.js';
import { Params } from './params.js';

export class FedYogi extends FedOpt {
  readonly name = 'FedYogi';
  protected readonly rule: FedOptRule = 'yogi';

  static fromParams(params: Record<string, unknown>): FedYogi {
    const p = new Params('FedYogi', { lr: 0.003162, ...params });
    const { common, opt } = FedOpt.readOpt(p, { serverLr: 0.01, beta1: 0.9, beta2: 0.999, tau: 1e-8 });
    return new FedYogi(common, opt);
  }
}
