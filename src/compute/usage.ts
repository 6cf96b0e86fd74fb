// Runs one training job to its end on an executor and turns the outcome into the ledger's UsageRecord; and the
// one call a site agent or the round engine needs: place a job by the border rule, run it there, account for it.
import type { ComputeResource, JobResult, JobStatus, TrainingJob, UsageRecord } from './types.js';
import type { Executor, JobHandle } from './executors/executor.js';
import { executorFor, type ExecutorOverrides } from './executors/index.js';
import { place, type Rejection } from './placement.js';

export interface SiteOwner { institution: string; country: string }

export function usageRecord(job: TrainingJob, resource: ComputeResource, site: SiteOwner, result: JobResult):
  UsageRecord {
  return {
    taskId: job.taskId, studyId: job.studyId,
    siteId: job.siteId, siteInstitution: site.institution, siteCountry: site.country,
    resourceId: resource.id, institution: resource.institution, country: resource.jurisdiction,
    cpuSeconds: result.usage.cpuSeconds, gpuSeconds: result.usage.gpuSeconds, wallSeconds: result.usage.wallSeconds,
  };
}

/** submit → wait (reporting progress) → collect. The handle is returned too, for the caller's records. */
export async function runToCompletion(executor: Executor, job: TrainingJob,
  onProgress?: (s: JobStatus, elapsedSeconds: number) => void): Promise<{ handle: JobHandle; result: JobResult }> {
  const handle = await executor.submit(job);
  await executor.wait(handle, { onProgress });
  return { handle, result: await executor.collect(handle) };
}

export interface PlaceAndRunOptions {
  /** From the jurisdiction policy: where this data may be processed (default: its own jurisdiction only). */
  allowedJurisdictions?: readonly string[];
  minGpuMemoryGiB?: number;
  /** Executor settings per scheduler, or a function choosing the executor (e.g. one shared LocalExecutor). */
  executors?: ExecutorOverrides | ((resource: ComputeResource) => Executor);
  onPlaced?: (resource: ComputeResource, reason: string) => void;
  onProgress?: (s: JobStatus, elapsedSeconds: number) => void;
}

export type PlaceAndRunResult =
  | { ok: false; reason: string; rejected: Rejection[] }
  | { ok: true; resource: ComputeResource; placement: string; handle: JobHandle; result: JobResult;
    record: UsageRecord };

/** Places `job` (refusing cross-border placements with the reason), runs it there and returns its usage record. */
export async function placeAndRun(job: TrainingJob, resources: readonly ComputeResource[], site: SiteOwner,
  o: PlaceAndRunOptions = {}): Promise<PlaceAndRunResult> {
  const p = place({
    siteId: job.siteId, dataJurisdiction: job.dataJurisdiction, cpus: job.cpus, gpus: job.gpus,
    ramGiB: job.memoryMiB / 1024,
    ...(o.allowedJurisdictions ? { allowedJurisdictions: o.allowedJurisdictions } : {}),
    ...(o.minGpuMemoryGiB !== undefined ? { minGpuMemoryGiB: o.minGpuMemoryGiB } : {}),
  }, resources);
  if (!p.ok) return p;
  o.onPlaced?.(p.resource, p.reason);
  const executor = typeof o.executors === 'function' ? o.executors(p.resource) : executorFor(p.resource, o.executors);
  const { handle, result } = await runToCompletion(executor, job, o.onProgress);
  return { ok: true, resource: p.resource, placement: p.reason, handle, result,
    record: usageRecord(job, p.resource, site, result) };
}
