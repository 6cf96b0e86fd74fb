// Pure parsing and formatting for the Slurm executor: durations, states, sacct rows, TRES strings, batch scripts.
import type { GpuSpec, JobState, TrainingJob } from '../types.js';
import { describeGpus, gpuIsType } from '../placement.js';

/**
 * Slurm durations as sacct prints them: "MM:SS.mmm" (TotalCPU under an hour), "HH:MM:SS", "D-HH:MM:SS",
 * "D-HH", "HH:MM:SS.mmm". Returns seconds; throws on anything else.
 */
export function parseSlurmDuration(text: string): number {
  const m = /^(?:(\d+)-)?(\d+(?::\d+){0,2}(?:\.\d+)?)$/.exec(text.trim());
  const f = m?.[2]!.split(':').map(Number);
  if (!m || !f || (m[1] === undefined && f.length === 1 && m[2]!.includes('.'))) {
    throw new Error(`not a Slurm duration: '${text}'`);
  }
  if (m[1] !== undefined) { // D-HH, D-HH:MM, D-HH:MM:SS
    return Number(m[1]) * 86400 + f[0]! * 3600 + (f[1] ?? 0) * 60 + (f[2] ?? 0);
  }
  if (f.length === 3) return f[0]! * 3600 + f[1]! * 60 + f[2]!; // HH:MM:SS(.mmm)
  if (f.length === 2) return f[0]! * 60 + f[1]!; // MM:SS(.mmm), as sacct prints under an hour
  return f[0]! * 60; // bare minutes, as --time takes them
}

/** Seconds to Slurm's --time "D-HH:MM:SS" (Slurm enforces limits at minute granularity). */
export function formatSlurmTime(seconds: number): string {
  const s = Math.max(1, Math.ceil(seconds));
  const d = Math.floor(s / 86400);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d}-${p(Math.floor((s % 86400) / 3600))}:${p(Math.floor((s % 3600) / 60))}:${p(s % 60)}`;
}

export function mapSlurmState(raw: string): JobState {
  const s = raw.trim().split(/\s+/)[0]!.replace(/\+$/, '');
  switch (s) {
    case 'PENDING': case 'CONFIGURING': case 'REQUEUED': case 'REQUEUE_HOLD': case 'REQUEUE_FED': case 'RESV_DEL_HOLD':
    case 'SUSPENDED': case 'STOPPED': case 'RESIZING':
      return 'pending';
    case 'RUNNING': case 'COMPLETING': case 'SIGNALING': case 'STAGE_OUT':
      return 'running';
    case 'COMPLETED': return 'completed';
    case 'CANCELLED': case 'REVOKED': return 'cancelled';
    case 'TIMEOUT': case 'DEADLINE': return 'timeout';
    case 'FAILED': case 'NODE_FAIL': case 'OUT_OF_MEMORY': case 'BOOT_FAIL': case 'PREEMPTED': case 'SPECIAL_EXIT':
      return 'failed';
    default: throw new Error(`unknown Slurm job state '${raw}'`);
  }
}

/** "code:signal" to one exit code, shell-style: a signal-killed job exits 128 + signal. */
export function parseExitCode(text: string): number {
  const m = /^(\d+):(\d+)$/.exec(text.trim());
  if (!m) throw new Error(`not a Slurm exit code: '${text}'`);
  const code = Number(m[1]);
  const sig = Number(m[2]);
  return code !== 0 ? code : sig !== 0 ? 128 + sig : 0;
}

/** "billing=1,cpu=2,gres/gpu=1,mem=512M,node=1" to counts; memory values keep their number only. */
export function parseTres(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const part of text.split(',').filter(Boolean)) {
    const [k, v] = part.split('=');
    if (k && v !== undefined) out[k] = parseFloat(v);
  }
  return out;
}

/**
 * GPUs in a TRES map: `gres/gpu=N`, else the sum of typed `gres/gpu:<type>=N` (sacct lists both when
 * AccountingStorageTRES names the types). `gres` is the GRES name the cluster allocates GPUs under.
 */
export function gpuCount(tres: Record<string, number>, gres = 'gpu'): number {
  if (tres[`gres/${gres}`] !== undefined) return tres[`gres/${gres}`]!;
  return Object.entries(tres).filter(([k]) => k.startsWith(`gres/${gres}:`)).reduce((n, [, v]) => n + v, 0);
}

export const SACCT_FORMAT = 'JobID,State,ExitCode,ElapsedRaw,TotalCPU,AllocTRES';

export interface SacctRow { jobId: string; state: string; exitCode: string; elapsedSeconds: number;
  totalCpuSeconds: number; allocTres: string }

/** Parses `sacct -P -n --format=${SACCT_FORMAT}` output. */
export function parseSacct(text: string): SacctRow[] {
  return text.split('\n').map((l) => l.trim()).filter(Boolean).map((line) => {
    const f = line.split('|');
    if (f.length < 6) throw new Error(`unexpected sacct line: '${line}'`);
    return { jobId: f[0]!, state: f[1]!, exitCode: f[2]!, elapsedSeconds: Number(f[3] || 0),
      totalCpuSeconds: f[4] ? parseSlurmDuration(f[4]) : 0, allocTres: f[5]! };
  });
}

/** Usage of one job from its sacct rows: the allocation row's figures, steps' CPU time if that is larger. */
export function usageFromSacct(jobId: string, rows: SacctRow[], gres = 'gpu'):
  { row: SacctRow; cpuSeconds: number; gpuSeconds: number; wallSeconds: number } | undefined {
  // The newest allocation row (should an old job share the id) and the step rows that follow it.
  const at = rows.map((r) => r.jobId).lastIndexOf(jobId);
  if (at < 0) return undefined;
  const row = rows[at]!;
  let steps = 0;
  for (let i = at + 1; i < rows.length && rows[i]!.jobId.startsWith(`${jobId}.`); i++) steps += rows[i]!.totalCpuSeconds;
  const wallSeconds = row.elapsedSeconds;
  return { row, cpuSeconds: Math.max(row.totalCpuSeconds, steps), wallSeconds,
    gpuSeconds: gpuCount(parseTres(row.allocTres), gres) * wallSeconds };
}

export const shellQuote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

export interface BatchOptions {
  partition?: string; account?: string; qos?: string; path?: string;
  /** The GRES name GPUs are allocated under (resource schedulerConfig.gpuGres; default `gpu`). */
  gpuGres?: string;
  /** The resource's GPUs, to turn a job's `gpuType` into its Slurm GRES type. */
  gpus?: readonly GpuSpec[];
}

/**
 * `--gres=gpu:N`, or `--gres=gpu:<gres type>:N` for a job that names a GPU type (a GRES type or a model name the
 * resource lists with its gresType). A type the resource does not list with a GRES type is an error: Slurm would
 * either refuse it or, untyped, hand out any GPU.
 */
export function gresDirective(job: Pick<TrainingJob, 'gpus' | 'gpuType'>, o: Pick<BatchOptions, 'gpuGres' | 'gpus'> = {}): string | undefined {
  if (job.gpus <= 0) return undefined;
  const name = o.gpuGres ?? 'gpu';
  if (job.gpuType === undefined) return `--gres=${name}:${job.gpus}`;
  const spec = (o.gpus ?? []).find((g) => gpuIsType(g, job.gpuType!) && g.gresType);
  if (!spec) throw new Error(`gpuType '${job.gpuType}': the resource lists no GPU of that type with a gresType (it offers ${describeGpus(o.gpus ?? [])}); set capacity.gpus[].gresType to the type sinfo -o %G shows`);
  return `--gres=${name}:${spec.gresType}:${job.gpus}`;
}

/** The batch script: #SBATCH directives from the job, its env exported, then exec of argv (no word splitting). */
export function batchScript(job: TrainingJob, o: BatchOptions = {}): string {
  const name = `setu-${job.taskId}`.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 64);
  const d = [
    `--job-name=${name}`, '--ntasks=1', `--cpus-per-task=${job.cpus}`, `--mem=${job.memoryMiB}M`,
    `--time=${formatSlurmTime(job.timeLimitSeconds)}`, `--chdir=${job.workdir}`,
    `--output=${job.workdir}/setu-%j.out`, `--error=${job.workdir}/setu-%j.err`,
    // The submitter's environment stays out of the job: only what the script exports below.
    '--export=NONE',
    ...[gresDirective(job, o)].filter((x): x is string => x !== undefined),
    ...(o.partition ? [`--partition=${o.partition}`] : []),
    ...(o.account ? [`--account=${o.account}`] : []),
    ...(o.qos ? [`--qos=${o.qos}`] : []),
  ];
  for (const x of d) if (/[\s]/.test(x)) throw new Error(`Slurm directive with whitespace: ${x}`);
  // Slurm sets CUDA_VISIBLE_DEVICES itself for a job given GPUs (gres.conf File=): the script must not touch it
  // then. A job given none sees none, so a trainer on a GPU node cannot take GPUs another job was allocated.
  const env = { PATH: o.path ?? '/usr/local/bin:/usr/bin:/bin', ...job.env, ...(job.gpus > 0 ? {} : { CUDA_VISIBLE_DEVICES: '' }),
    SETU_TASK_ID: job.taskId, SETU_STUDY_ID: job.studyId, SETU_GPUS: String(job.gpus) };
  return [
    '#!/bin/sh',
    `# Setu task ${job.taskId} of study ${job.studyId} for site ${job.siteId} (data in ${job.dataJurisdiction})`,
    ...d.map((x) => `#SBATCH ${x}`),
    ...Object.entries(env).map(([k, v]) => `export ${k}=${shellQuote(v)}`),
    `exec ${job.argv.map(shellQuote).join(' ')}`,
    '',
  ].join('\n');
}
