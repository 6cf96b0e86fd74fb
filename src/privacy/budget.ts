/**
 * A site's privacy budget for one study: a cap (ε, δ) and the RDP account of everything spent so far.
 * The site asks `wouldExceed(plan)` before accepting a task and calls `spend(plan)` when it releases the
 * result; both compose the planned mechanism onto the account, so the cap is checked on the total, not per task.
 * Serialisable to JSON so the site can persist it and the coordinator can report it.
 */
import { RdpAccountant } from './rdp.js';

/**
 * One release of the subsampled Gaussian mechanism, repeated `steps` times; with `kind: 'laplace'`, `steps`
 * releases of the Laplace mechanism whose scale per unit of sensitivity is `noiseMultiplier` (sampleRate 1).
 */
export interface MechanismPlan {
  sampleRate: number;
  noiseMultiplier: number;
  steps: number;
  kind?: 'gaussian' | 'laplace';
}

export interface SpendRecord extends MechanismPlan {
  label: string;
  /** ε spent in total after this record, at the budget's δ. */
  epsilonAfter: number;
}

export interface PrivacyBudgetJSON {
  epsilon: number;
  delta: number;
  accountant: ReturnType<RdpAccountant['toJSON']>;
  history: SpendRecord[];
}

export class PrivacyBudget {
  readonly epsilon: number;
  readonly delta: number;
  private acc: RdpAccountant;
  private readonly history: SpendRecord[];

  constructor(epsilon: number, delta: number, accountant = new RdpAccountant(), history: SpendRecord[] = []) {
    if (!(epsilon > 0)) throw new Error(`budget ε must be > 0, got ${epsilon}`);
    if (!(delta > 0 && delta < 1)) throw new Error(`budget δ must be in (0,1), got ${delta}`);
    this.epsilon = epsilon;
    this.delta = delta;
    this.acc = accountant;
    this.history = history.map((h) => ({ ...h }));
  }

  /** ε spent so far at this budget's δ. */
  spent(): number { return this.acc.epsilon(this.delta).eps; }

  remaining(): number { return Math.max(0, this.epsilon - this.spent()); }

  /** ε the account would show after running `plan`. */
  epsilonAfter(plan: MechanismPlan): number {
    return this.after(plan).epsilon(this.delta).eps;
  }

  private after(plan: MechanismPlan): RdpAccountant {
    return plan.kind === 'laplace' ? this.acc.peekLaplace(plan.noiseMultiplier, plan.steps) : this.acc.peek(plan.sampleRate, plan.noiseMultiplier, plan.steps);
  }

  wouldExceed(plan: MechanismPlan): boolean {
    return this.epsilonAfter(plan) > this.epsilon;
  }

  /** Records a release. Refuses, changing nothing, when it would exceed the budget. */
  spend(plan: MechanismPlan, label = ''): SpendRecord {
    const after = this.epsilonAfter(plan);
    if (after > this.epsilon) {
      throw new Error(`privacy budget exceeded: would reach ε=${after.toFixed(4)} of ε=${this.epsilon} (δ=${this.delta})`);
    }
    this.acc = this.after(plan);
    const rec: SpendRecord = { ...plan, label, epsilonAfter: after };
    this.history.push(rec);
    return { ...rec };
  }

  records(): SpendRecord[] { return this.history.map((h) => ({ ...h })); }

  toJSON(): PrivacyBudgetJSON {
    return { epsilon: this.epsilon, delta: this.delta, accountant: this.acc.toJSON(), history: this.records() };
  }

  static fromJSON(j: unknown): PrivacyBudget {
    const o = j as Partial<PrivacyBudgetJSON>;
    if (!o || typeof o.epsilon !== 'number' || typeof o.delta !== 'number') throw new Error('budget JSON needs numeric epsilon and delta');
    if (!Array.isArray(o.history)) throw new Error('budget JSON needs a history array');
    return new PrivacyBudget(o.epsilon, o.delta, RdpAccountant.fromJSON(o.accountant), o.history);
  }
}
