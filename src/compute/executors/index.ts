// Picks the executor a registered resource needs, configured from its schedulerConfig.
import type { ComputeResource } from '../types.js';
import type { Executor } from './executor.js';
import { LocalExecutor, type LocalExecutorOptions } from './local.js';
import { SlurmExecutor, type SlurmExecutorOptions } from './slurm.js';
import { KubernetesExecutor, type KubernetesExecutorOptions } from './kubernetes.js';

export * from './executor.js';
export { LocalExecutor, type LocalExecutorOptions } from './local.js';
export { SlurmExecutor, slurmAvailable, slurmQueue, type SlurmExecutorOptions, type SlurmQueueEntry } from './slurm.js';
export { KubernetesExecutor, type KubernetesExecutorOptions } from './kubernetes.js';
export { buildJobManifest, jobName } from './kubernetes-manifest.js';
export { batchScript } from './slurm-parse.js';

export interface ExecutorOverrides {
  local?: LocalExecutorOptions;
  slurm?: Partial<SlurmExecutorOptions>;
  kubernetes?: Partial<KubernetesExecutorOptions>;
}

/** One executor per resource; a Kubernetes resource without a context/kubeconfig or image throws, saying so. */
export function executorFor(resource: ComputeResource, overrides: ExecutorOverrides = {}): Executor {
  const c = resource.schedulerConfig ?? {};
  switch (resource.scheduler) {
    case 'local':
      return new LocalExecutor(overrides.local);
    case 'slurm':
      return new SlurmExecutor({ partition: c.partition, account: c.account, qos: c.qos, gpuGres: c.gpuGres,
        gpus: resource.capacity.gpus, ...overrides.slurm });
    case 'kubernetes':
      return new KubernetesExecutor({ image: c.image ?? '', context: c.kubeContext, kubeconfig: c.kubeconfig,
        namespace: c.namespace, workdirClaim: c.workdirClaim, gpus: resource.capacity.gpus, ...overrides.kubernetes });
  }
}
