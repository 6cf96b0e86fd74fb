/**
 * DP noise for analytics releases, when a site's policy asks for it, charged to the site's own budget
 * (src/privacy's RDP account) and reported in the ledger's `PrivacySpend` shape.
 *
 * A query releases `components` statistics, each with its own sensitivity Δ_j under adding or
 * removing one row (a count: 1; a clamped sum: max(|lo|, |hi|); a clamped sum of squares:
 * max(lo², hi²)). A whole contingency table or histogram is one component: one row moves one cell by 1.
 * - Laplace: noise Lap(λ·Δ_j) on component j with λ = components / ε, so the query is ε-DP outright (basic
 *   composition); the account charges `components` Laplace releases of scale λ through their RDP curve.
 * - Gaussian: noise N(0, (σΔ_j)²) with the smallest σ that keeps `components` Gaussian releases within
 *   (ε, δ) by the RDP accountant (q = 1), and the account charges exactly that.
 * Noise comes from the cryptographic generator (src/privacy/noise.ts), never from a seeded one.
 */
import type { PrivacySpend } from '../protocol/api.js';
import { PrivacyBudget, type MechanismPlan } from '../privacy/budget.js';
import type { NormalSource } from '../privacy/noise.js';
import { noiseMultiplierFor } from '../privacy/rdp.js';
import { QueryRefused } from './columns.js';
import type { AnalyticsPolicy } from './spec.js';

/** Uniform (0, 1) and standard normal draws: `CryptoNormal` in production. */
export interface NoiseSource extends NormalSource {
  uniform(): number;
}

/** What a site needs to add noise: its account for this study and a generator. */
export interface DpContext {
  budget: PrivacyBudget;
  noise: NoiseSource;
}

/** The noise a released answer carries, stated so the coordinator can say how far the result may be off. */
export interface NoiseInfo {
  mechanism: 'laplace' | 'gaussian';
  /** Standard deviation of the noise on each released component, in the order the answer lists them. */
  sd: number[];
}

export class DpRelease {
  readonly plan: MechanismPlan;
  private constructor(readonly mechanism: 'laplace' | 'gaussian', readonly multiplier: number, readonly sensitivities: number[]) {
    this.plan = mechanism === 'laplace'
      ? { kind: 'laplace', sampleRate: 1, noiseMultiplier: multiplier, steps: sensitivities.length }
      : { kind: 'gaussian', sampleRate: 1, noiseMultiplier: multiplier, steps: sensitivities.length };
  }

  /** Plans the noise for components of these sensitivities under the site's policy, or refuses when its budget cannot afford it. */
  static plan(policy: AnalyticsPolicy, ctx: DpContext | undefined, sensitivities: number[]): DpRelease {
    const dp = policy.dp!;
    if (!ctx) throw new QueryRefused('budget', 'this site requires DP noise but has no privacy budget for the study (set privacy.budget in its site.yaml)');
    const m = sensitivities.length;
    const mult = dp.mechanism === 'laplace' ? m / dp.epsilon : noiseMultiplierFor(dp.epsilon, dp.delta!, 1, m);
    const r = new DpRelease(dp.mechanism, mult, sensitivities);
    if (ctx.budget.wouldExceed(r.plan)) {
      throw new QueryRefused('budget', `privacy budget: this query (${dp.mechanism} noise at ε=${dp.epsilon} over ${m} released component${m === 1 ? '' : 's'}) would bring the study's ε to ${ctx.budget.epsilonAfter(r.plan).toFixed(4)}, over this site's budget ε=${ctx.budget.epsilon} (δ=${ctx.budget.delta}; spent so far ${ctx.budget.spent().toFixed(4)})`);
    }
    return r;
  }

  /** Standard deviation of the noise on component j. */
  sd(j: number): number {
    const scale = this.multiplier * this.sensitivities[j]!;
    return this.mechanism === 'laplace' ? Math.SQRT2 * scale : scale;
  }

  info(): NoiseInfo {
    return { mechanism: this.mechanism, sd: this.sensitivities.map((_, j) => this.sd(j)) };
  }

  /** x plus noise for component j. */
  add(x: number, j: number, src: NoiseSource): number {
    const scale = this.multiplier * this.sensitivities[j]!;
    if (this.mechanism === 'gaussian') return x + scale * src.normal();
    // Laplace by inversion of a uniform in (0, 1): −b·sign(u−½)·log(1 − 2|u−½|).
    const u = src.uniform() - 0.5;
    return x - scale * Math.sign(u) * Math.log(1 - 2 * Math.abs(u));
  }

  /** Charges the account (the caller persists it before the answer is queued) and returns the ledger's record. */
  spend(ctx: DpContext, label: string): PrivacySpend {
    ctx.budget.spend(this.plan, label);
    return {
      mechanism: this.mechanism,
      sampleRate: 1,
      noiseMultiplier: this.multiplier,
      steps: this.plan.steps,
      epsilon: ctx.budget.spent(),
      delta: ctx.budget.delta,
      budgetEpsilon: ctx.budget.epsilon,
      budgetDelta: ctx.budget.delta,
    };
  }
}
