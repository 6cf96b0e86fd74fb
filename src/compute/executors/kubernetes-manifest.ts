// Pure parts of the Kubernetes executor: the batch/v1 Job manifest for a training job, and reading a Job's status.
import { createHash } from 'node:crypto';
import type { GpuSpec, JobStatus, TrainingJob } from '../types.js';
import { describeGpus, gpuIsType } from '../placement.js';

export const JURISDICTION_LABEL = 'setu.dev/jurisdiction';
/** The node label NVIDIA's GPU feature discovery sets to the GPU's product name, spaces as dashes. */
export const GPU_PRODUCT_LABEL = 'nvidia.com/gpu.product';

export interface ManifestOptions {
  image: string;
  namespace?: string;
  /** PersistentVolumeClaim mounted at the job's workdir; an emptyDir when absent (output then lives in the logs). */
  workdirClaim?: string;
  ttlSecondsAfterFinished?: number;
  /** The resource's GPUs, to turn a job's `gpuType` into a node selector on the GPU's product. */
  gpus?: readonly GpuSpec[];
}

/**
 * A job that names a GPU type runs only on nodes whose GPU feature discovery label is that GPU's product (the
 * resource's `model`, spaces as dashes: `NVIDIA A100-SXM4-80GB` → `NVIDIA-A100-SXM4-80GB`); without it any GPU would do.
 */
export function gpuNodeSelector(job: Pick<TrainingJob, 'gpus' | 'gpuType'>, gpus: readonly GpuSpec[] = []): Record<string, string> {
  if (job.gpus <= 0 || job.gpuType === undefined) return {};
  const spec = gpus.find((g) => gpuIsType(g, job.gpuType!));
  if (!spec) throw new Error(`gpuType '${job.gpuType}': the resource lists no GPU of that type (it offers ${describeGpus(gpus)})`);
  return { [GPU_PRODUCT_LABEL]: labelValue(spec.model.trim().replace(/\s+/g, '-')) };
}

/** A DNS-1123 name unique per study and task: readable prefix plus a hash of both ids. */
export function jobName(job: Pick<TrainingJob, 'studyId' | 'taskId'>): string {
  const hash = createHash('sha256').update(`${job.studyId}\0${job.taskId}`).digest('hex').slice(0, 10);
  const readable = `setu-${job.taskId}`.toLowerCase().replace(/[^a-z0-9-]+/g, '-').slice(0, 50).replace(/-+$/, '');
  return `${readable}-${hash}`;
}

/** A label value (≤63 chars of [A-Za-z0-9._-], alphanumeric at both ends); the raw id also goes in an annotation. */
export function labelValue(s: string): string {
  return s.replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 63).replace(/^[^A-Za-z0-9]+|[^A-Za-z0-9]+$/g, '');
}

export function buildJobManifest(job: TrainingJob, o: ManifestOptions): Record<string, unknown> {
  const labels = {
    'app.kubernetes.io/managed-by': 'setu',
    'setu.dev/study': labelValue(job.studyId),
    'setu.dev/task': labelValue(job.taskId),
    'setu.dev/site': labelValue(job.siteId),
    'setu.dev/data-jurisdiction': job.dataJurisdiction,
  };
  const resources: Record<string, string> = { cpu: String(job.cpus), memory: `${job.memoryMiB}Mi` };
  if (job.gpus > 0) resources['nvidia.com/gpu'] = String(job.gpus);
  const env = { ...job.env, SETU_TASK_ID: job.taskId, SETU_STUDY_ID: job.studyId, SETU_GPUS: String(job.gpus) };
  return {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: {
      name: jobName(job),
      ...(o.namespace ? { namespace: o.namespace } : {}),
      labels,
      annotations: { 'setu.dev/study-id': job.studyId, 'setu.dev/task-id': job.taskId, 'setu.dev/site-id': job.siteId },
    },
    spec: {
      backoffLimit: 0, // a failed training attempt is reported, not retried behind the round engine's back
      activeDeadlineSeconds: job.timeLimitSeconds,
      ttlSecondsAfterFinished: o.ttlSecondsAfterFinished ?? 3600,
      template: {
        metadata: { labels },
        spec: {
          restartPolicy: 'Never',
          // Pods may only land on nodes labelled with the data's jurisdiction: the border rule, enforced by the cluster.
          nodeSelector: { [JURISDICTION_LABEL]: job.dataJurisdiction, ...gpuNodeSelector(job, o.gpus) },
          containers: [{
            name: 'trainer',
            image: o.image,
            command: job.argv,
            workingDir: job.workdir,
            env: Object.entries(env).map(([name, value]) => ({ name, value })),
            resources: { requests: resources, limits: { ...resources } },
            volumeMounts: [{ name: 'workdir', mountPath: job.workdir }],
          }],
          volumes: [o.workdirClaim
            ? { name: 'workdir', persistentVolumeClaim: { claimName: o.workdirClaim } }
            : { name: 'workdir', emptyDir: {} }],
        },
      },
    },
  };
}

interface K8sCondition { type?: string; status?: string; reason?: string; message?: string; lastTransitionTime?: string }
export interface K8sJob {
  status?: { active?: number; succeeded?: number; failed?: number; startTime?: string; completionTime?: string;
    conditions?: K8sCondition[] };
}

/** Maps `kubectl get job -o json` to a JobStatus: Complete/Failed conditions, DeadlineExceeded is a timeout. */
export function statusFromK8sJob(j: K8sJob): JobStatus {
  const cond = (t: string) => j.status?.conditions?.find((c) => c.type === t && c.status === 'True');
  const failed = cond('Failed');
  if (failed) {
    return { state: failed.reason === 'DeadlineExceeded' ? 'timeout' : 'failed',
      detail: [failed.reason, failed.message].filter(Boolean).join(': ') };
  }
  if (cond('Complete')) return { state: 'completed', detail: 'Complete', exitCode: 0 };
  if ((j.status?.active ?? 0) > 0) return { state: 'running', detail: `${j.status!.active} active pod(s)` };
  return { state: 'pending', detail: 'no active pod yet' };
}

/** Wall seconds from the Job's start to its completion (or to its final condition when it failed). */
export function wallSecondsOfK8sJob(j: K8sJob): number {
  const start = j.status?.startTime ? Date.parse(j.status.startTime) : NaN;
  const endText = j.status?.completionTime
    ?? j.status?.conditions?.find((c) => (c.type === 'Failed' || c.type === 'Complete') && c.status === 'True')
      ?.lastTransitionTime;
  const end = endText ? Date.parse(endText) : NaN;
  return Number.isFinite(start) && Number.isFinite(end) ? Math.max(0, (end - start) / 1000) : 0;
}
