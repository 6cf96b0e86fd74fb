/**
 * SCAFFOLD, FLamby's variant (equal to SCAFFOLD option II when ηs = 1). All of its state
 * lives on the sites (client.ts keeps c_k and ŷ_k in FitOutput.clientState):
 *   1. before training  c_k += (x − ŷ_k) / (ηs ηl K)
 *   2. local steps use  ∇ − c_k
 *   3. y_k ← ηs y_k + (1 − ηs) x,  ŷ_k ← y_k
 * The server then does x += Σ n_k (y_k − x) / Σ n_k, i.e. FedAvg of the returned y_k.
 * The client's state must be kept by the site (or the simulator) between the rounds it joins.
 */
import type { FitConfig } from '../types.js';
import { readCommon, type CommonOptions } from './base.js';
import { FedAvg } from './fedavg.js';
import { Params } from './params.js';

export class Scaffold extends FedAvg {
  override readonly name: string = 'SCAFFOLD';
  constructor(common: CommonOptions, readonly serverLr: number) {
    super(common);
    if (common.fit.optimizer.kind !== 'sgd' || common.fit.optimizer.momentum) throw new Error('SCAFFOLD: the FLamby variant needs plain SGD on the sites (optimizer "sgd", momentum 0)');
  }

  /** Parameters: the common ones plus serverLr ηs (default 1). */
  static override fromParams(params: Record<string, unknown>): Scaffold {
    const p = new Params('SCAFFOLD', params);
    const serverLr = p.number('serverLr', 1, { minExclusive: 0 });
    const s = new Scaffold(readCommon(p), serverLr);
    p.done();
    return s;
  }

  protected override fitConfig(round: number): FitConfig {
    const base = super.fitConfig(round);
    return { ...base, extra: { ...(base.extra ?? {}), scaffold: true, serverLr: this.serverLr } };
  }
}
