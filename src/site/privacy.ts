/**
 * The site's side of differential privacy: which mechanism a task releases, whether this site's budget allows
 * it, the private training itself (src/privacy's DP-SGD, or clipping/noising the update for DP-FedAvg), and the
 * account kept in the state directory.
 *
 * The account is written (atomically, fsynced) before the task trains, not after the upload is acknowledged: a
 * result that leaves the site has been released whether or not the coordinator accepts it, so the site may
 * over-count a release it never sent (a task that then fails, or never comes back) but never under-count one it did.
 *
 * Each task is charged once: the charge is labelled with the task id, and a task whose id the account already
 * holds (an attempt killed after its charge was written, run again after a restart) is neither refused nor charged
 * again. That is sound because the retry releases exactly the same output: its noise comes from the task's own
 * seed (release.ts), not from a fresh draw.
 */
import type { DpSpec, PrivacySpend, TaskMessage } from '../protocol/api.js';
import { mapWeights, tensorLike, type Weights } from '../protocol/tensors.js';
import type { Dataset, Model } from '../learning/types.js';
import type { SiteConfig } from './config.js';
import type { SiteState } from './state.js';
import { PrivacyBudget, type MechanismPlan } from '../privacy/budget.js';
import { noiseMultiplierFor } from '../privacy/rdp.js';
import { dpFit } from '../privacy/dpsgd.js';
import { privatiseUpdate, updateDelta } from '../privacy/dpfedavg.js';
import { CryptoNormal } from '../privacy/noise.js';

export const BUDGET_FILE = 'privacy-budget.json';

export interface DpTaskPlan {
  mechanism: 'dp-sgd' | 'dp-fedavg';
  dp: DpSpec;
  plan: MechanismPlan;
  clientsPerRound: number;
}

/**
 * The mechanism a fit task releases on `rows` training examples.
 * Sample level: Poisson rate q = batch / rows, localSteps steps per round, σ given or the smallest that keeps
 * all the study's rounds × localSteps steps within its target (ε, δ) on this site's data.
 * Client level: one release per round of the site's whole update (q = 1 from its own point of view) with the σ
 * the coordinator set in the task.
 */
export function dpPlanOf(task: TaskMessage, rows: number): DpTaskPlan | undefined {
  const dp = task.privacy?.dp;
  if (!dp || task.kind !== 'fit') return undefined;
  const clientsPerRound = task.privacy!.clientsPerRound;
  if (dp.level === 'sample') {
    const fit = task.fit!;
    const steps = fit.localSteps ?? 100;
    const sampleRate = Math.min(1, fit.batchSize / rows);
    const noiseMultiplier = dp.noiseMultiplier ?? noiseMultiplierFor(dp.epsilon, dp.delta, sampleRate, task.privacy!.rounds * steps);
    return { mechanism: 'dp-sgd', dp, plan: { sampleRate, noiseMultiplier, steps }, clientsPerRound };
  }
  return { mechanism: 'dp-fedavg', dp, plan: { sampleRate: 1, noiseMultiplier: dp.noiseMultiplier ?? noiseMultiplierFor(dp.epsilon, dp.delta, 1, task.privacy!.rounds), steps: 1 }, clientsPerRound };
}

/** This site's cap for a study: its per-study entry, else its default, else the study's own target. */
export function budgetCap(cfg: SiteConfig, task: TaskMessage): { epsilon: number; delta: number } {
  return cfg.privacy?.studies?.[task.studyId] ?? cfg.privacy?.budget ?? { epsilon: task.privacy!.dp!.epsilon, delta: task.privacy!.dp!.delta };
}

/** The study's account under the site's current cap (a changed cap keeps everything already spent). */
export function loadBudget(state: SiteState, cfg: SiteConfig, task: TaskMessage): PrivacyBudget {
  const cap = budgetCap(cfg, task);
  const saved = state.readJson<ReturnType<PrivacyBudget['toJSON']>>(task.studyId, BUDGET_FILE);
  return saved ? PrivacyBudget.fromJSON({ ...saved, epsilon: cap.epsilon, delta: cap.delta }) : new PrivacyBudget(cap.epsilon, cap.delta);
}

/** Why this site refuses the task, or undefined when its budget allows the release (or has paid for it already). */
export function budgetRefusal(budget: PrivacyBudget, p: DpTaskPlan, taskId?: string): string | undefined {
  if (taskId !== undefined && alreadyCharged(budget, taskId)) return undefined;
  if (!budget.wouldExceed(p.plan)) return undefined;
  return `privacy budget: this task (${p.mechanism}, σ=${p.plan.noiseMultiplier.toFixed(3)}, q=${p.plan.sampleRate.toFixed(4)}, ${p.plan.steps} steps) would bring the study's ε to ${budget.epsilonAfter(p.plan).toFixed(4)}, over this site's budget ε=${budget.epsilon} (δ=${budget.delta}; spent so far ${budget.spent().toFixed(4)})`;
}

/** Whether the account already holds the charge of this task (its label is the task id). */
export function alreadyCharged(budget: PrivacyBudget, taskId: string): boolean {
  return budget.records().some((r) => r.label === taskId);
}

/**
 * Records the release in the account once per task id, persists it (fsynced) and returns what the result reports to
 * the coordinator. A task already charged costs nothing more: its retry releases the same output.
 */
export function spendAndPersist(state: SiteState, studyId: string, budget: PrivacyBudget, p: DpTaskPlan, label: string): PrivacySpend {
  if (!alreadyCharged(budget, label)) {
    budget.spend(p.plan, label);
    state.write(studyId, BUDGET_FILE, JSON.stringify(budget.toJSON()));
  }
  return {
    mechanism: p.mechanism,
    sampleRate: p.plan.sampleRate,
    noiseMultiplier: p.plan.noiseMultiplier,
    steps: p.plan.steps,
    epsilon: budget.spent(),
    delta: budget.delta,
    budgetEpsilon: budget.epsilon,
    budgetDelta: budget.delta,
  };
}

/**
 * Private local training. Sample level: DP-SGD from the global weights (Poisson batches, per-example clipping,
 * noise and sampling from AES-CTR keyed by the task's secret seed). Client level: the ordinary local training, then the update Δ is clipped to C
 * and, in distributed mode, this site's share of the noise is added; the result is global + Δ.
 */
export function trainPrivately(input: {
  model: Model;
  global: Weights;
  data: Dataset;
  task: TaskMessage;
  plan: DpTaskPlan;
  /** The task's noise seed (release.ts taskNoiseSeed): a retried task draws the same noise and sampling. */
  seed: Uint8Array;
  ordinary: () => { weights: Weights; numExamples: number; loss: number };
}): { weights: Weights; numExamples: number; loss: number } {
  const { plan, task } = input;
  if (plan.mechanism === 'dp-sgd') {
    const fit = task.fit!;
    const out = dpFit({
      model: input.model,
      weights: input.global,
      data: input.data,
      random: new CryptoNormal(input.seed),
      config: { clipNorm: plan.dp.clipNorm, noiseMultiplier: plan.plan.noiseMultiplier, sampleRate: plan.plan.sampleRate, steps: plan.plan.steps, lr: fit.optimizer.lr, ...(fit.optimizer.momentum ? { momentum: fit.optimizer.momentum } : {}) },
    });
    return { weights: out.weights, numExamples: out.numExamples, loss: out.loss };
  }
  const out = input.ordinary();
  const delta = updateDelta(out.weights, input.global);
  privatiseUpdate(delta, { clipNorm: plan.dp.clipNorm, noiseMultiplier: plan.plan.noiseMultiplier, mode: plan.dp.mode ?? 'central', clientsPerRound: plan.clientsPerRound }, new CryptoNormal(input.seed));
  const weights = mapWeights(Object.keys(input.global), (k) => {
    const t = input.global[k]!, d = new Float32Array(t.data.length);
    for (let i = 0; i < d.length; i++) d[i] = t.data[i]! + delta[k]!.data[i]!;
    return tensorLike(t, d);
  });
  return { weights, numExamples: out.numExamples, loss: out.loss };
}
