/**
 * The seam between the site agent and whatever trains: the built-in learning core (in-process), a job placed on
 * shared compute, or the site's own program (an external trainer such as a PyTorch script through the Python SDK).
 *
 * A trainer only trains and evaluates. The agent around it owns everything that protects a release, so privacy
 * applies the same way to every trainer and every tensor set: client-level DP (clipping the update's difference
 * from the global model and adding the task's noise, drawn from a per-task seed saved before training), SecAgg+
 * masking, the site's privacy account, queuing, upload and retries. The one exception is sample-level DP-SGD,
 * which only the training loop itself can apply: the agent hands the trainer the plan (`dpSgd`) and charges the
 * budget from what the trainer reports it did.
 */
import type { TaskMessage } from '../../protocol/api.js';
import type { Weights } from '../../protocol/tensors.js';
import type { PendingResult } from '../state.js';
import type { UsageReport } from '../placed.js';

/** A progress line a trainer emits while it works (the agent logs it and forwards it to the coordinator). */
export interface TrainerProgress {
  /** Steps (or batches, or epochs) done so far and in all, when the trainer knows them. */
  step?: number;
  of?: number;
  /** Running metrics, e.g. the mean training loss so far. */
  metrics?: Record<string, number>;
  message?: string;
}

/** Sample-level DP-SGD the agent asks the trainer to apply (per-example clipping, Gaussian noise, Poisson sampling). */
export interface DpSgdPlan {
  clipNorm: number;
  noiseMultiplier: number;
  sampleRate: number;
  steps: number;
  /** Seeds the noise and the sampling: derived from the task, so a retried task releases the same output. */
  seed: string;
}

export interface TrainerInput {
  task: TaskMessage;
  /** The global weights the task starts from: the tensors the study sends to sites, decoded. */
  global: Weights;
  siteName: string;
  /** Present when the study runs sample-level DP: the trainer must apply exactly this plan or refuse the task. */
  dpSgd?: DpSgdPlan;
  signal?: AbortSignal;
  progress?: (p: TrainerProgress) => void;
}

export interface FitOutcome {
  /** The trained local weights: every tensor of `global` that the study aggregates, with the same names and shapes. */
  weights: Weights;
  /** Training examples used (FedAvg weights by it; the coordinator checks it against the site's declared cohort). */
  numExamples: number;
  trainMetrics: Record<string, number>;
  /** The trainer's evaluation of the incoming global model on the site's test data (any metric names). */
  evalMetrics?: Record<string, number>;
  evalExamples?: number;
  /** What the trainer itself did for sample-level DP: the agent's accountant charges the budget from it. */
  dpSgd?: { noiseMultiplier: number; sampleRate: number; steps: number };
  /** Site state written only once the coordinator holds the result (batch stream, client state, local layers). */
  commit: PendingResult['commit'];
  /** CPU/GPU-seconds of a placed job; in-process training is measured by the agent itself. */
  usage?: UsageReport;
  /** GPU-seconds on the site's own machine: the GPUs the trainer says it used × its run time (no placed job). */
  gpuSeconds?: number;
}

export interface EvaluateOutcome {
  /** Metrics of the given weights on the site's test data (any names; the coordinator weights them by `examples`). */
  metrics: Record<string, number>;
  examples: number;
  /** As FitOutcome.gpuSeconds. */
  gpuSeconds?: number;
}

export interface Trainer {
  /** For logs and task errors: "built-in", "external (python3 train.py)", "placed on slurm-in-1". */
  readonly description: string;
  fit(input: TrainerInput): Promise<FitOutcome>;
  evaluate(input: TrainerInput): Promise<EvaluateOutcome>;
}
