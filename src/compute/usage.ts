// Runs one training job to its end on an executor and turns the outcome into the ledger's UsageRecord.
import type { ComputeResource, JobResult, JobStatus, TrainingJob, UsageRecord } from './types.js';
import type { Executor, JobHandle } from './executors/executor.js';

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
