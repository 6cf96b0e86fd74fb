// Resources of a demo consortium (two Indian, two Japanese partners), shared by the compute tests.
import type { ComputeResource } from './types.js';

export const resources: ComputeResource[] = [
  {
    id: 'in-cdac-param', name: 'PARAM Siddhi (share)', institution: 'cdac', jurisdiction: 'IN', scheduler: 'slurm',
    capacity: { cpus: 128, gpus: [{ model: 'A100', memoryGiB: 40, count: 8 }], ramGiB: 1024 },
    availability: { now: { cpus: 64, gpus: 2, ramGiB: 512 } }, schedulerConfig: { partition: 'gpu', account: 'setu' },
  },
  {
    id: 'in-iisc-k8s', name: 'IISc cluster', institution: 'iisc', jurisdiction: 'IN', scheduler: 'kubernetes',
    capacity: { cpus: 64, gpus: [{ model: 'V100', memoryGiB: 16, count: 4 }], ramGiB: 256 },
    availability: { now: { cpus: 32, gpus: 4, ramGiB: 128 } },
    schedulerConfig: { image: 'ghcr.io/setu/trainer:1', namespace: 'setu', kubeContext: 'iisc' },
  },
  {
    id: 'jp-abci', name: 'ABCI (share)', institution: 'aist', jurisdiction: 'JP', scheduler: 'slurm',
    capacity: { cpus: 256, gpus: [{ model: 'H100', memoryGiB: 80, count: 16 }], ramGiB: 2048 },
    availability: { now: { cpus: 200, gpus: 12, ramGiB: 1500 } },
  },
  {
    id: 'jp-kyoto-local', name: 'Kyoto workstation', institution: 'kyoto-u', jurisdiction: 'JP', scheduler: 'local',
    capacity: { cpus: 16, gpus: [], ramGiB: 64 },
  },
];
