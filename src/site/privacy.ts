/**
 * The site's side of differential privacy: which mechanism a task releases, whether this site's budget allows
 * it, the private training itself (src/privacy's DP-SGD), the clipping and noising of any trainer's update for
 * DP-FedAvg, the plan an external trainer's own DP-SGD is handed and charged by, and the account kept in the state
 * directory.
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
import { dtypeOf, hasTensor, isFloatDType, mapWeights, pickWeights, tensorLike, type Weights } from '../protocol/tensors.js';
import type { DpSgdPlan } from './trainers/trainer.js';
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
 * Sample-level DP-SGD in the built-in trainer: from the global weights, Poisson batches, per-example clipping, noise
 * and sampling from AES-CTR keyed by the task's secret seed. (Client-level DP is not training: the agent applies it
 * to any trainer's release with `privatiseRelease`.)
 */
export function trainPrivately(input: {
  model: Model;
  global: Weights;
  data: Dataset;
  task: TaskMessage;
  plan: DpTaskPlan;
  /** The task's noise seed (release.ts taskNoiseSeed): a retried task draws the same noise and sampling. */
  seed: Uint8Array;
}): { weights: Weights; numExamples: number; loss: number } {
  const { plan, task } = input;
  if (plan.mechanism !== 'dp-sgd') throw new Error(`trainPrivately runs DP-SGD; ${plan.mechanism} is applied to the release (privatiseRelease)`);
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

/**
 * Client-level DP-FedAvg at the agent, around any trainer (built-in, placed job, external program): `upload` is what
 * the study aggregates (tensor-rules.ts `releaseOf`: local and skipped tensors are not in it, so they neither count
 * in the norm nor get noise). Δ = upload − global is clipped to C as one vector over every tensor and, in distributed
 * mode, this site's share N(0, σ²C²/n) of the noise is added, drawn from the task's seed (a retry releases the same
 * bytes); the release is global + Δ.
 *
 * Dtypes: values are float32 whatever the dtype (protocol/tensors.ts), so F16/BF16 tensors are clipped and noised in
 * float32 and keep their dtype; rounding them to F16/BF16 when the release is encoded is post-processing of the
 * noised value (distributed mode), or is clipped again by the coordinator (central mode), and under SecAgg+ the Δ
 * travels as float32 anyway. Integer tensors (BatchNorm's `num_batches_tracked`) are never released under DP: their
 * change is a count of the site's batches and would dominate a norm of C; the coordinator refuses a DP study that
 * aggregates one when its initial weights are uploaded, and an update that still holds one is refused here.
 */
export function privatiseRelease(upload: Weights, global: Weights, plan: DpTaskPlan, seed: Uint8Array): { weights: Weights; norm: number } {
  if (plan.mechanism !== 'dp-fedavg') throw new Error(`privatiseRelease applies client-level DP; ${plan.mechanism} runs inside the training`);
  const names = Object.keys(upload);
  for (const k of names) {
    if (!hasTensor(global, k)) throw new Error(`client-level DP: the update's tensor "${k}" is not in the global model`);
    const dt = dtypeOf(global[k]!);
    if (!isFloatDType(dt)) throw new Error(`client-level DP: integer tensor "${k}" (${dt}) would be aggregated under differential privacy; the study must mark it local or skip`);
  }
  const base = pickWeights(global, names);
  const delta = updateDelta(upload, base);
  const { norm } = privatiseUpdate(delta, { clipNorm: plan.dp.clipNorm, noiseMultiplier: plan.plan.noiseMultiplier, mode: plan.dp.mode ?? 'central', clientsPerRound: plan.clientsPerRound }, new CryptoNormal(seed));
  const weights = mapWeights(names, (k) => {
    const t = base[k]!, d = new Float32Array(t.data.length), dk = delta[k]!.data;
    for (let i = 0; i < d.length; i++) d[i] = t.data[i]! + dk[i]!;
    return tensorLike(t, d);
  });
  return { weights, norm };
}

/** What the agent hands an external trainer for sample-level DP (trainers/trainer.ts DpSgdPlan): the plan and its secret seed. */
export function dpSgdPlanOf(p: DpTaskPlan, seed: Uint8Array): DpSgdPlan {
  return { clipNorm: p.dp.clipNorm, noiseMultiplier: p.plan.noiseMultiplier, sampleRate: p.plan.sampleRate, steps: p.plan.steps, seed: Buffer.from(seed).toString('hex') };
}

/**
 * The plan a trainer's own DP-SGD really carried out (its declaration: trainers/external.ts checks it is no less
 * private than `planned`), which the accountant charges instead of the plan. A declaration the site's budget or the
 * study's plan cannot pay for is refused with the numbers (the task error `budget_exhausted`).
 */
export function declaredPlan(planned: DpTaskPlan, declared: { noiseMultiplier: number; sampleRate: number; steps: number }): DpTaskPlan {
  const { noiseMultiplier, sampleRate, steps } = declared;
  return { ...planned, plan: { noiseMultiplier, sampleRate, steps } };
}

/** Why a declared DP-SGD spend cannot be charged: more than the plan asked for, or more than the site has left. */
export function declaredRefusal(budget: PrivacyBudget, planned: DpTaskPlan, declared: DpTaskPlan, taskId: string): string | undefined {
  const d = declared.plan, p = planned.plan;
  if (d.noiseMultiplier < p.noiseMultiplier || d.sampleRate > p.sampleRate || d.steps > p.steps) {
    return `privacy: the trainer declared DP-SGD with σ=${d.noiseMultiplier}, q=${d.sampleRate}, ${d.steps} steps, less private than the study's plan (σ=${p.noiseMultiplier.toFixed(4)}, q=${p.sampleRate.toFixed(4)}, ${p.steps} steps)`;
  }
  return budgetRefusal(budget, declared, taskId);
}
