/**
 * Adaptive server optimisers (Reddi et al. 2021, "Adaptive Federated Optimization") with
 * FLamby's formulas: Δ = Σ n_k (y_k − x) / Σ n_k; m = β1 m + (1 − β1) Δ, then
 *   FedAdam:    v = β2 v + (1 − β2) Δ²
 *   FedYogi:    v = v − (1 − β2) Δ² sign(v − Δ²)
 *   FedAdagrad: v = v + Δ²
 * and x += η m / (√v + τ). m and v start at 0 and there is NO bias correction. Every
 * operation is rounded to float32, as FLamby's numpy float32 arrays do.
 */
import type { Weights } from '../../protocol/tensors.js';
import type { RoundAggregator, ServerStep, StrategyState } from '../strategy.js';
import { BaseStrategy, MeanAggregator, checkRound, checkStateName, readCommon, type CommonOptions } from './base.js';
import { Params } from './params.js';
import { emptyWeights, layoutMismatch, layoutOf, setTensor, tensorLike, zerosLike } from '../../protocol/tensors.js';

export type FedOptRule = 'adam' | 'yogi' | 'adagrad';

export interface FedOptOptions {
  serverLr: number;
  beta1: number;
  beta2: number;
  tau: number;
}

const f = Math.fround;

export abstract class FedOpt extends BaseStrategy {
  protected abstract readonly rule: FedOptRule;
  private m: Weights | null = null;
  private v: Weights | null = null;

  constructor(common: CommonOptions, readonly opt: FedOptOptions) {
    super(common);
  }

  /** Reads serverLr, beta1, beta2, tau (defaults: FLamby's heart values for this rule) and the common parameters. */
  protected static readOpt(p: Params, def: FedOptOptions): { common: CommonOptions; opt: FedOptOptions } {
    const opt = {
      serverLr: p.number('serverLr', def.serverLr, { minExclusive: 0 }),
      beta1: p.number('beta1', def.beta1, { min: 0, maxExclusive: 1 }),
      beta2: p.number('beta2', def.beta2, { min: 0, maxExclusive: 1 }),
      tau: p.number('tau', def.tau, { minExclusive: 0 }),
    };
    const common = readCommon(p);
    p.done();
    return { common, opt };
  }

  begin(round: number, global: Weights): RoundAggregator {
    checkRound(round);
    return new MeanAggregator(global, this.common.weighting, (meanY) => this.step(global, meanY));
  }

  /** The server update on one element range (the in-memory step below and the coordinator's streamed one). */
  get serverStep(): ServerStep {
    const { serverLr: eta, beta1: b1, beta2: b2, tau } = this.opt;
    const rule = this.rule;
    return {
      weighting: this.common.weighting,
      moments: ['m', 'v'],
      apply(xd, yd, [m, v], o) {
        for (let i = 0; i < xd.length; i++) {
          const d = f(yd[i]! - xd[i]!);
          m![i] = f(f(b1 * m![i]!) + f(f(1 - b1) * d));
          const d2 = f(d * d);
          let vi = v![i]!;
          if (rule === 'adam') vi = f(f(b2 * vi) + f(f(1 - b2) * d2));
          else if (rule === 'yogi') vi = f(vi - f(f(f(1 - b2) * d2) * Math.sign(f(vi - d2))));
          else vi = f(vi + d2);
          v![i] = vi;
          o[i] = f(xd[i]! + f(f(eta * m![i]!) / f(f(Math.sqrt(vi)) + f(tau))));
        }
      },
    };
  }

  /** Server update from the mean of the sites' models. */
  private step(x: Weights, meanY: Weights): Weights {
    this.m ??= zerosLike(x);
    this.v ??= zerosLike(x);
    const step = this.serverStep;
    const out = emptyWeights();
    for (const k of Object.keys(x)) {
      const o = new Float32Array(x[k]!.data.length);
      step.apply(x[k]!.data, meanY[k]!.data, [this.m[k]!.data, this.v[k]!.data], o);
      setTensor(out, k, tensorLike(x[k]!, o));
    }
    return out;
  }

  /** Moments are float32 whatever the tensor's dtype (an F16 model's moments saved as F16 would not restore exactly). */
  override getState(): StrategyState {
    const tensors = emptyWeights();
    if (this.m && this.v) {
      for (const [k, t] of Object.entries(this.m)) setTensor(tensors, `m.${k}`, { shape: [...t.shape], data: new Float32Array(t.data) });
      for (const [k, t] of Object.entries(this.v)) setTensor(tensors, `v.${k}`, { shape: [...t.shape], data: new Float32Array(t.data) });
    }
    return { json: { strategy: this.name, started: this.m !== null }, tensors };
  }

  override setState(state: StrategyState): void {
    const j = checkStateName(state, this.name);
    if (!j['started']) {
      this.m = this.v = null;
      return;
    }
    const m = emptyWeights(), v = emptyWeights();
    for (const [name, t] of Object.entries(state.tensors)) {
      const dot = name.indexOf('.');
      const kind = name.slice(0, dot), key = name.slice(dot + 1);
      const copy = tensorLike(t, new Float32Array(t.data));
      if (kind === 'm') setTensor(m, key, copy);
      else if (kind === 'v') setTensor(v, key, copy);
      else throw new Error(`setState: unexpected tensor "${name}" for ${this.name}`);
    }
    const msg = layoutMismatch(v, layoutOf(m));
    if (msg || Object.keys(m).length === 0) throw new Error(`setState: ${this.name} moments m and v disagree: ${msg ?? 'empty'}`);
    this.m = m;
    this.v = v;
  }
}

export { readCommon };
