/**
 * FedAdagrad: the adaptive server rule "adagrad" of fedopt.ts (FLamby's formulas, no bias correction).
 * Defaults are FLamby's Fed-Heart-Disease values: server lr 0.316228, client lr 0.003162, β = (0.9, 0.999), τ = 1e-8.
 */
import { FedOpt, type FedOptRule } from './fedopt.js';
import { Params } from './params.js';

export class FedAdagrad extends FedOpt {
  readonly name = 'FedAdagrad';
  protected readonly rule: FedOptRule = 'adagrad';

  static fromParams(params: Record<string, unknown>): FedAdagrad {
    const p = new Params('FedAdagrad', { lr: 0.003162, ...params });
    const { common, opt } = FedOpt.readOpt(p, { serverLr: 0.316228, beta1: 0.9, beta2: 0.999, tau: 1e-8 });
    return new FedAdagrad(common, opt);
  }
}
