/**
 * An external trainer as a placed job: a site without compute of its own (`compute: {mode: placed}`) runs its own
 * program (PyTorch on a GPU…) on the resource the coordinator placed the task on, through that resource's executor
 * (a local process, Slurm via sbatch with `--gres` for the GPUs site.yaml asks for, Kubernetes).
 *
 * The contract is unchanged: Setu writes weights.safetensors and task.json into the task's work directory, the job
 * runs the trainer's argv there with SETU_WORKDIR/SETU_TASK, and the agent validates output.safetensors and
 * result.json exactly as for a trainer run on the site's machine (trainers/external.ts). The work directory is under
 * the site's state directory, which (like the trainer's command and data file) must be on a filesystem the compute
 * nodes share. Progress lines are read from the job's output once it ends (a scheduler gives no live stdout), and the
 * task's CPU/GPU-seconds are the scheduler's accounting (Slurm: sacct TotalCPU and AllocTRES gres/gpu × elapsed).
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { TaskMessage } from '../protocol/api.js';
import type { ComputeResource, JobResult, TrainingJob } from '../compute/types.js';
import { executorFor } from '../compute/executors/index.js';
import type { JobHandle } from '../compute/executors/executor.js';
import type { SiteConfig } from './config.js';
import type { UsageReport } from './placed.js';
import { parseProgress, type Launcher, type LaunchOutcome } from './trainers/external.js';
import type { TrainerProgress } from './trainers/trainer.js';

export interface PlacedTrainerRun {
  launch: Launcher;
  /** Where the task's work directory goes: under the site's state directory (shared with the compute nodes). */
  workRoot: string;
  /** The job's accounted usage, once it has been collected. */
  usage(): UsageReport | undefined;
}

/** The launcher for one placed task. `report` tells the coordinator the job id and its end state. */
export async function placedTrainer(cfg: SiteConfig, resource: ComputeResource, task: TaskMessage, siteName: string,
  report: (jobId: string, state: string) => Promise<void>, log: (m: string) => void): Promise<PlacedTrainerRun> {
  const need = cfg.compute?.mode === 'placed' ? cfg.compute : { mode: 'placed' as const };
  const workRoot = join(cfg.stateDirAbs, 'jobs');
  await mkdir(workRoot, { recursive: true });
  const executor = executorFor(resource, { slurm: { pollMs: 250 } });
  let usage: UsageReport | undefined;
  const launch: Launcher = async (r) => {
    const job: TrainingJob = {
      argv: r.command, env: r.env, workdir: r.workDir, cpus: need.cpus ?? 1, gpus: need.gpus ?? 0,
      ...(need.gpuType !== undefined ? { gpuType: need.gpuType } : {}),
      memoryMiB: Math.max(256, Math.round((need.ramGiB ?? 1) * 1024)),
      timeLimitSeconds: Math.max(60, Math.ceil(r.timeoutMs / 1000)),
      // As for the built-in trainer's placed job: the placed resource's jurisdiction, which placement checked against
      // the data's policy (a Kubernetes Job selects nodes by it).
      studyId: task.studyId, taskId: task.taskId, siteId: siteName, dataJurisdiction: resource.jurisdiction,
    };
    let handle: JobHandle;
    try {
      handle = await executor.submit(job);
    } catch (e) {
      return { outcome: 'spawn', code: null, signal: null, error: `${resource.id} (${resource.scheduler}) did not take the job: ${(e as Error).message}`, stdout: '', stderr: '' };
    }
    log(`task ${task.taskId}: external trainer submitted to ${resource.id} (${resource.scheduler}) as job ${handle.id}${job.gpus ? ` with ${job.gpus} GPU(s)` : ''}`);
    await report(handle.id, 'submitted');
    // A cancelled task cancels its job; the collect below then sees it end.
    const onAbort = (): void => void executor.cancel(handle).catch((e) => log(`task ${task.taskId}: cancelling job ${handle.id}: ${(e as Error).message}`));
    r.signal?.addEventListener('abort', onAbort, { once: true });
    let result: JobResult;
    try {
      await executor.wait(handle, { pollMs: 250 });
      result = await executor.collect(handle);
    } finally {
      r.signal?.removeEventListener('abort', onAbort);
    }
    usage = { resourceId: resource.id, scheduler: resource.scheduler, cpuSeconds: result.usage.cpuSeconds, gpuSeconds: result.usage.gpuSeconds,
      wallSeconds: result.usage.wallSeconds, cpuBasis: result.usage.cpuBasis, jobId: handle.id };
    const st = result.status.state;
    // The coordinator's queue view must not show an ended job as still running.
    if (st !== 'completed' || result.exitCode !== 0) await report(handle.id, st === 'completed' ? 'failed' : st).catch(() => {});
    let lastProgress: TrainerProgress | undefined;
    for (const line of result.stdoutTail.split('\n')) lastProgress = parseProgress(line) ?? lastProgress;
    if (lastProgress) r.onProgress?.(lastProgress);
    const out: Omit<LaunchOutcome, 'outcome' | 'code'> = { signal: null, stdout: result.stdoutTail, stderr: result.stderrTail, ...(lastProgress ? { lastProgress } : {}) };
    if (st === 'timeout') return { ...out, outcome: 'timeout', code: null };
    if (st === 'cancelled') return r.signal?.aborted ? { ...out, outcome: 'aborted', code: null } : { ...out, outcome: 'exited', code: result.exitCode || 1, stderr: `${result.stderrTail}\n(job ${handle.id} on ${resource.id} was cancelled: ${result.status.detail ?? 'by the scheduler'})` };
    return { ...out, outcome: 'exited', code: st === 'completed' ? result.exitCode : result.exitCode || 1 };
  };
  return { launch, workRoot, usage: () => usage };
}
