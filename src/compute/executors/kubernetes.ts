// Kubernetes executor: applies a batch/v1 Job with `kubectl apply -f -`, follows it with `kubectl get job -o json`,
// cancels by deleting it. It works only when a kube context or kubeconfig is configured for the resource; there is
// no cluster in CI, so the manifests are what the tests check (kubernetes-manifest.test.ts).
// Usage: Kubernetes reports no CPU time for a finished pod without a metrics pipeline, so CPU-seconds here are
// requested CPUs × wall time, marked `allocated`; GPU-seconds are requested GPUs × wall time. Logs mix stdout and
// stderr (that is what `kubectl logs` returns); they come back as stdoutTail.
import type { JobResult, JobStatus, TrainingJob } from '../types.js';
import { ExecutorError, pollUntilDone, runCommand, tailText, type Executor, type JobHandle,
  type WaitOptions } from './executor.js';
import { buildJobManifest, jobName, statusFromK8sJob, wallSecondsOfK8sJob, type K8sJob,
  type ManifestOptions } from './kubernetes-manifest.js';

export interface KubernetesExecutorOptions extends ManifestOptions {
  context?: string;
  kubeconfig?: string;
  kubectl?: string;
  pollMs?: number;
}

export class KubernetesExecutor implements Executor {
  readonly kind = 'kubernetes' as const;
  private readonly cancelled = new Set<string>();

  constructor(private readonly o: KubernetesExecutorOptions) {
    if (!o.context && !o.kubeconfig) {
      throw new ExecutorError('the Kubernetes executor needs a kube context or kubeconfig in the resource\'s ' +
        'schedulerConfig (kubeContext / kubeconfig); none is configured');
    }
    if (!o.image) throw new ExecutorError('the Kubernetes executor needs a container image (schedulerConfig.image)');
  }

  private async kubectl(args: string[], input?: string) {
    const base = [...(this.o.kubeconfig ? ['--kubeconfig', this.o.kubeconfig] : []),
      ...(this.o.context ? ['--context', this.o.context] : []), ...(this.o.namespace ? ['-n', this.o.namespace] : [])];
    try {
      return await runCommand(this.o.kubectl ?? 'kubectl', [...base, ...args], { input, timeoutMs: 60_000 });
    } catch (e) {
      throw new ExecutorError(`cannot run kubectl: ${(e as Error).message}`);
    }
  }

  manifest(job: TrainingJob): Record<string, unknown> { return buildJobManifest(job, this.o); }

  async submit(job: TrainingJob): Promise<JobHandle> {
    const r = await this.kubectl(['apply', '-f', '-'], JSON.stringify(this.manifest(job)));
    if (r.code !== 0) throw new ExecutorError(`kubectl apply refused task ${job.taskId}: ${r.stderr.trim()}`);
    return { kind: 'kubernetes', id: jobName(job), job, submittedAt: new Date() };
  }

  private async getJob(name: string): Promise<K8sJob> {
    const r = await this.kubectl(['get', 'job', name, '-o', 'json']);
    if (r.code !== 0) throw new ExecutorError(`kubectl get job ${name} failed: ${r.stderr.trim()}`);
    return JSON.parse(r.stdout) as K8sJob;
  }

  async status(h: JobHandle): Promise<JobStatus> {
    if (this.cancelled.has(h.id)) return { state: 'cancelled', detail: 'Job deleted' };
    return statusFromK8sJob(await this.getJob(h.id));
  }

  wait(h: JobHandle, options: WaitOptions = {}): Promise<JobStatus> {
    return pollUntilDone(h, (x) => this.status(x), options, this.o.pollMs ?? 2000);
  }

  async cancel(h: JobHandle): Promise<void> {
    const r = await this.kubectl(['delete', 'job', h.id, '--propagation-policy=Foreground', '--wait=false']);
    if (r.code !== 0) throw new ExecutorError(`kubectl delete job ${h.id} failed: ${r.stderr.trim()}`);
    this.cancelled.add(h.id);
  }

  async collect(h: JobHandle): Promise<JobResult> {
    const status = await this.wait(h);
    if (status.state === 'cancelled') {
      return { status, exitCode: 143, stdoutTail: '', stderrTail: '',
        usage: { cpuSeconds: 0, gpuSeconds: 0, wallSeconds: 0, cpuBasis: 'allocated' } };
    }
    const j = await this.getJob(h.id);
    const logs = await this.kubectl(['logs', `job/${h.id}`, '--tail=2000']);
    const pods = await this.kubectl(['get', 'pods', '-l', `job-name=${h.id}`, '-o', 'json']);
    let exitCode = status.state === 'completed' ? 0 : 1;
    if (pods.code === 0) {
      const items = (JSON.parse(pods.stdout) as { items?: { status?: { containerStatuses?:
        { state?: { terminated?: { exitCode?: number } } }[] } }[] }).items ?? [];
      const code = items[0]?.status?.containerStatuses?.[0]?.state?.terminated?.exitCode;
      if (typeof code === 'number') exitCode = code;
    }
    const wallSeconds = wallSecondsOfK8sJob(j);
    return {
      status: { ...status, exitCode },
      exitCode,
      stdoutTail: tailText(Buffer.from(logs.stdout)),
      stderrTail: logs.code === 0 ? '' : logs.stderr.trim(),
      usage: { cpuSeconds: h.job.cpus * wallSeconds, gpuSeconds: h.job.gpus * wallSeconds, wallSeconds,
        cpuBasis: 'allocated' },
    };
  }
}
