/**
 * FedAvgM (Hsu et al. 2019): server momentum on the pseudo-gradient g = x − mean(y):
 * v = β v + g;  x ← x − η v. With β = 0 and η = 1 it is FedAvg. (Flower's formula.)
 */
import { emptyWeights, setTensor, tensorLike, zerosLike, type Weights } from '../../protocol/tensors.js';
import type { RoundAggregator, ServerStep, StrategyState } from '../strategy.js';
import { BaseStrategy, MeanAggregator, checkRound, checkStateName, readCommon, type CommonOptions } from './base.js';
import { Params } from './params.js';

export class FedAvgM extends BaseStrategy {
  readonly name = 'FedAvgM';
  private v: Weights | null = null;

  constructor(common: CommonOptions, readonly serverLr: number, readonly serverMomentum: number) {
    super(common);
  }

  /** Parameters: the common ones plus serverLr (1) and serverMomentum (0.9). */
  static fromParams(params: Record<string, unknown>): FedAvgM {
    const p = new Params('FedAvgM', params);
    const serverLr = p.number('serverLr', 1, { minExclusive: 0 });
    const serverMomentum = p.number('serverMomentum', 0.9, { min: 0, maxExclusive: 1 });
    const s = new FedAvgM(readCommon(p), serverLr, serverMomentum);
    p.done();
    return s;
  }

  /** v = β v + (x − y), x' = x − η v, in float64 with v kept in float32 (the in-memory step and the streamed one). */
  get serverStep(): ServerStep {
    const lr = this.serverLr, mom = this.serverMomentum;
    return {
      weighting: this.common.weighting,
      moments: ['v'],
      apply(x, y, [v], o) {
        for (let i = 0; i < x.length; i++) {
          v![i] = mom * v![i]! + (x[i]! - y[i]!);
          o[i] = x[i]! - lr * v![i]!;
        }
      },
    };
  }

  begin(round: number, global: Weights): RoundAggregator {
    checkRound(round);
    return new MeanAggregator(global, this.common.weighting, (meanY) => {
      this.v ??= zerosLike(global);
      const out = zerosLike(global);
      const step = this.serverStep;
      for (const k of Object.keys(global)) step.apply(global[k]!.data, meanY[k]!.data, [this.v[k]!.data], out[k]!.data);
      return out;
    });
  }

  /** Moments are float32 whatever the tensor's dtype (an F16 model's moments saved as F16 would not restore exactly). */
  override getState(): StrategyState {
    const tensors = emptyWeights();
    if (this.v) for (const [k, t] of Object.entries(this.v)) setTensor(tensors, `v.${k}`, { shape: [...t.shape], data: new Float32Array(t.data) });
    return { json: { strategy: this.name, started: this.v !== null }, tensors };
  }

  override setState(state: StrategyState): void {
    const j = checkStateName(state, this.name);
    if (!j['started']) {
      this.v = null;
      return;
    }
    const v = emptyWeights();
    for (const [name, t] of Object.entries(state.tensors)) {
      if (!name.startsWith('v.')) throw new Error(`setState: unexpected tensor "${name}" for FedAvgM`);
      setTensor(v, name.slice(2), tensorLike(t, new Float32Array(t.data)));
    }
    if (Object.keys(v).length === 0) throw new Error('setState: FedAvgM momentum is missing');
    this.v = v;
  }
}
