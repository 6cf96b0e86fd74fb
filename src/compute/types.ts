// Compute federation types. The TypeBox schemas are the documentation and the validators of what partners register
// (resources) and what sites ask to run (training jobs); the TypeScript types are derived from them.
import { Type, type Static } from '@sinclair/typebox';

/** ISO 3166-1 alpha-2 country code, upper case: the jurisdiction of data or of compute. */
export const Jurisdiction = Type.String({ pattern: '^[A-Z]{2}$', description: 'ISO 3166-1 alpha-2 country code' });

export const SchedulerKind = Type.Union([Type.Literal('local'), Type.Literal('slurm'), Type.Literal('kubernetes')]);
export type SchedulerKind = Static<typeof SchedulerKind>;

export const GpuSpec = Type.Object({
  model: Type.String({ minLength: 1 }),
  memoryGiB: Type.Number({ exclusiveMinimum: 0 }),
  count: Type.Integer({ minimum: 1 }),
  /**
   * Slurm: the GRES type of these GPUs as `sinfo -o %G` shows it (`gpu:a100:4` has type `a100`). A job that asks
   * for a GPU type is submitted with `--gres=gpu:<type>:N`; without it, `--gres=gpu:N`.
   */
  gresType: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_.-]{1,64}$' })),
}, { additionalProperties: false });
export type GpuSpec = Static<typeof GpuSpec>;

export const Capacity = Type.Object({
  cpus: Type.Integer({ minimum: 1 }),
  gpus: Type.Array(GpuSpec),
  ramGiB: Type.Number({ exclusiveMinimum: 0 }),
}, { additionalProperties: false });
export type Capacity = Static<typeof Capacity>;

/** Free capacity, either now or during a window [from, to) of ISO-8601 instants. */
export const FreeCapacity = Type.Object({
  cpus: Type.Integer({ minimum: 0 }),
  gpus: Type.Integer({ minimum: 0 }),
  ramGiB: Type.Number({ minimum: 0 }),
}, { additionalProperties: false });
export type FreeCapacity = Static<typeof FreeCapacity>;

export const AvailabilityWindow = Type.Object({
  from: Type.String({ format: 'date-time' }),
  to: Type.String({ format: 'date-time' }),
  free: FreeCapacity,
}, { additionalProperties: false });
export type AvailabilityWindow = Static<typeof AvailabilityWindow>;

/** `now`: what is free at the moment (e.g. from sinfo). `windows`: what the owner offers when. Neither: all idle. */
export const Availability = Type.Object({
  now: Type.Optional(FreeCapacity),
  windows: Type.Optional(Type.Array(AvailabilityWindow)),
}, { additionalProperties: false });
export type Availability = Static<typeof Availability>;

export const SchedulerConfig = Type.Object({
  partition: Type.Optional(Type.String({ minLength: 1 })),
  account: Type.Optional(Type.String({ minLength: 1 })),
  qos: Type.Optional(Type.String({ minLength: 1 })),
  kubeContext: Type.Optional(Type.String({ minLength: 1 })),
  kubeconfig: Type.Optional(Type.String({ minLength: 1 })),
  namespace: Type.Optional(Type.String({ minLength: 1 })),
  image: Type.Optional(Type.String({ minLength: 1 })),
  /** Kubernetes: a PersistentVolumeClaim to mount at the job's workdir (an emptyDir when absent). */
  workdirClaim: Type.Optional(Type.String({ minLength: 1 })),
  /**
   * Slurm: the GRES name that allocates this resource's GPUs (default `gpu`), for `--gres` and for reading
   * `AllocTRES` (`gres/<name>=N`). A cluster that hands GPUs out under another name (e.g. `shard` for GPU shares)
   * sets it; the test cluster uses a count-only non-GPU GRES to exercise the plumbing.
   */
  gpuGres: Type.Optional(Type.String({ pattern: '^[a-z][a-z0-9_]{0,31}$' })),
}, { additionalProperties: false });
export type SchedulerConfig = Static<typeof SchedulerConfig>;

export const ComputeResource = Type.Object({
  id: Type.String({ pattern: '^[a-z0-9][a-z0-9._-]{0,62}$' }),
  name: Type.String({ minLength: 1 }),
  /** Id of the institution that owns the resource and contributes its compute. */
  institution: Type.String({ minLength: 1 }),
  jurisdiction: Jurisdiction,
  scheduler: SchedulerKind,
  capacity: Capacity,
  availability: Type.Optional(Availability),
  schedulerConfig: Type.Optional(SchedulerConfig),
}, { additionalProperties: false });
export type ComputeResource = Static<typeof ComputeResource>;

export const TrainingJob = Type.Object({
  /** Program and arguments; run without a shell. */
  argv: Type.Array(Type.String(), { minItems: 1 }),
  env: Type.Optional(Type.Record(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$' }), Type.String())),
  /** Absolute directory the job runs in and writes its output to; must exist. */
  workdir: Type.String({ pattern: '^/' }),
  cpus: Type.Integer({ minimum: 1 }),
  gpus: Type.Integer({ minimum: 0 }),
  /** A GPU type the job needs (a resource's `gresType` or `model`); any GPU when absent. */
  gpuType: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_.-]{1,64}$' })),
  memoryMiB: Type.Integer({ minimum: 1 }),
  timeLimitSeconds: Type.Integer({ minimum: 1 }),
  studyId: Type.String({ minLength: 1 }),
  taskId: Type.String({ minLength: 1 }),
  siteId: Type.String({ minLength: 1 }),
  dataJurisdiction: Jurisdiction,
}, { additionalProperties: false });
export type TrainingJob = Static<typeof TrainingJob>;

export type JobState = 'pending' | 'running' | 'completed' | 'failed' | 'cancelled' | 'timeout';
export const TERMINAL_STATES: ReadonlySet<JobState> = new Set(['completed', 'failed', 'cancelled', 'timeout']);

export interface JobStatus {
  state: JobState;
  /** Scheduler's own word for the state (e.g. Slurm's OUT_OF_MEMORY), for people. */
  detail?: string;
  exitCode?: number;
}

/**
 * How the CPU-seconds were obtained: `measured` from the kernel's accounting of the job's processes
 * (local: the wrapper shell's `times`; Slurm: sacct TotalCPU), `allocated` as cpus × wall time when the scheduler
 * reports no CPU time (Kubernetes without a metrics pipeline).
 */
export type UsageBasis = 'measured' | 'allocated';

export interface JobUsage {
  cpuSeconds: number;
  /** Allocated GPUs × wall seconds: no scheduler here measures GPU busy time. */
  gpuSeconds: number;
  wallSeconds: number;
  cpuBasis: UsageBasis;
}

export interface JobResult {
  status: JobStatus;
  exitCode: number;
  stdoutTail: string;
  stderrTail: string;
  usage: JobUsage;
}

/** One task's compute use, as the ledger aggregates it. */
export interface UsageRecord {
  taskId: string;
  studyId: string;
  /** The data-owning site that consumed the compute, its institution and country. */
  siteId: string;
  siteInstitution: string;
  siteCountry: string;
  /** The resource that contributed the compute, its owner institution and country. */
  resourceId: string;
  institution: string;
  country: string;
  cpuSeconds: number;
  gpuSeconds: number;
  wallSeconds: number;
}
