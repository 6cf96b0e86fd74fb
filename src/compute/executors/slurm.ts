// Slurm executor: sbatch a generated batch script, follow with squeue (live) and sacct (accounting), cancel with
// scancel, collect the job's output files. CPU-seconds are sacct's TotalCPU (user+system time gathered by
// jobacct_gather/linux); GPU-seconds are AllocTRES gres/gpu × ElapsedRaw. sacct needs accounting storage: the
// cluster from .ci/setup-slurm.sh runs slurmdbd on MariaDB for that (accounting_storage/none makes sacct useless).
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { JobResult, JobStatus, TrainingJob } from '../types.js';
import { ExecutorError, pollUntilDone, runCommand, tailText, type Executor, type JobHandle,
  type WaitOptions } from './executor.js';
import { batchScript, mapSlurmState, parseExitCode, parseSacct, SACCT_FORMAT, usageFromSacct,
  type BatchOptions } from './slurm-parse.js';

export interface SlurmExecutorOptions extends BatchOptions {
  /** Directory holding sbatch, squeue, sacct, scancel (default: found on PATH). */
  binDir?: string;
  /** How long collect() waits for sacct to record a finished job, in ms. */
  accountingTimeoutMs?: number;
  pollMs?: number;
}

export class SlurmExecutor implements Executor {
  readonly kind = 'slurm' as const;
  constructor(private readonly o: SlurmExecutorOptions = {}) {}

  private bin(name: string): string { return this.o.binDir ? join(this.o.binDir, name) : name; }

  private async slurm(name: string, args: string[], cwd?: string) {
    try {
      return await runCommand(this.bin(name), args, { cwd, timeoutMs: 30_000 });
    } catch (e) {
      throw new ExecutorError(`cannot run ${name}: ${(e as Error).message} (is Slurm's client installed?)`);
    }
  }

  async submit(job: TrainingJob): Promise<JobHandle> {
    const st = await stat(job.workdir).catch(() => undefined);
    if (!st?.isDirectory()) throw new ExecutorError(`workdir ${job.workdir} is not a directory`);
    const script = join(job.workdir, `setu-${job.taskId.replace(/[^A-Za-z0-9._-]/g, '_')}.sbatch`);
    await writeFile(script, batchScript(job, { ...this.o, path: this.o.path ?? process.env.PATH }), { mode: 0o755 });
    const r = await this.slurm('sbatch', ['--parsable', script], job.workdir);
    const id = r.stdout.trim().split(';')[0]!;
    if (r.code !== 0 || !/^\d+$/.test(id)) {
      throw new ExecutorError(`sbatch refused task ${job.taskId}: ${(r.stderr || r.stdout).trim()}`);
    }
    return { kind: 'slurm', id, job, submittedAt: new Date() };
  }

  private async sacct(h: JobHandle) {
    const id = h.id;
    // A start bound keeps out an older job with the same id (job ids restart if slurmctld's state is wiped while
    // the accounting database keeps its records). Slurm reads local time without a zone.
    const since = new Date(h.submittedAt.getTime() - 10 * 60_000);
    const local = new Date(since.getTime() - since.getTimezoneOffset() * 60_000).toISOString().slice(0, 19);
    const r = await this.slurm('sacct', ['-j', id, '-S', local, `--format=${SACCT_FORMAT}`, '-P', '-n']);
    if (r.code !== 0) throw new ExecutorError(`sacct -j ${id} failed: ${r.stderr.trim()}`);
    return parseSacct(r.stdout);
  }

  async status(h: JobHandle): Promise<JobStatus> {
    // squeue knows live jobs at once; sacct is the record once the job has left the queue.
    const q = await this.slurm('squeue', ['-h', '-j', h.id, '-o', '%T']);
    const live = q.code === 0 ? q.stdout.trim().split('\n')[0]?.trim() : '';
    if (live) {
      const state = mapSlurmState(live);
      if (state === 'pending' || state === 'running') return { state, detail: live };
    }
    const row = (await this.sacct(h)).filter((r) => r.jobId === h.id).pop();
    if (row) {
      const state = mapSlurmState(row.state);
      return { state, detail: row.state, ...(state === 'pending' || state === 'running' ? {} :
        { exitCode: parseExitCode(row.exitCode) }) };
    }
    if (live) return { state: mapSlurmState(live), detail: live };
    // Just submitted: slurmctld may not have sent the record to slurmdbd yet.
    if (Date.now() - h.submittedAt.getTime() < 60_000) return { state: 'pending', detail: 'not yet in sacct' };
    throw new ExecutorError(`Slurm job ${h.id} is known neither to squeue nor to sacct`);
  }

  wait(h: JobHandle, options: WaitOptions = {}): Promise<JobStatus> {
    return pollUntilDone(h, (x) => this.status(x), options, this.o.pollMs ?? 1000);
  }

  async cancel(h: JobHandle): Promise<void> {
    const r = await this.slurm('scancel', [h.id]);
    if (r.code !== 0) throw new ExecutorError(`scancel ${h.id} failed: ${r.stderr.trim()}`);
    await this.wait(h, { pollMs: this.o.pollMs ?? 500 });
  }

  async collect(h: JobHandle): Promise<JobResult> {
    const status = await this.wait(h);
    // sacct may lag squeue by a moment: wait until the allocation row is final.
    const deadline = Date.now() + (this.o.accountingTimeoutMs ?? 30_000);
    let usage = usageFromSacct(h.id, await this.sacct(h), this.o.gpuGres);
    while (!usage || mapSlurmState(usage.row.state) !== status.state) {
      if (Date.now() > deadline) throw new ExecutorError(`sacct has no final record of Slurm job ${h.id}`);
      await new Promise((r) => setTimeout(r, 300));
      usage = usageFromSacct(h.id, await this.sacct(h), this.o.gpuGres);
    }
    const read = async (ext: string) => tailText(await readFile(join(h.job.workdir, `setu-${h.id}.${ext}`))
      .catch(() => Buffer.alloc(0)));
    return {
      status: { ...status, detail: usage.row.state },
      exitCode: parseExitCode(usage.row.exitCode),
      stdoutTail: await read('out'),
      stderrTail: await read('err'),
      usage: { cpuSeconds: usage.cpuSeconds, gpuSeconds: usage.gpuSeconds, wallSeconds: usage.wallSeconds,
        cpuBasis: 'measured' },
    };
  }
}

/** Whether a Slurm controller answers here: `sinfo` runs and lists at least one node. */
export async function slurmAvailable(binDir?: string): Promise<{ ok: boolean; detail: string }> {
  try {
    const r = await runCommand(binDir ? join(binDir, 'sinfo') : 'sinfo', ['-h', '-o', '%n %T'], { timeoutMs: 15_000 });
    const out = r.stdout.trim();
    return r.code === 0 && out ? { ok: true, detail: out } : { ok: false, detail: (r.stderr || 'no nodes').trim() };
  } catch (e) {
    return { ok: false, detail: `sinfo not runnable: ${(e as Error).message}` };
  }
}

export interface SlurmQueueEntry { id: string; name: string; state: string; elapsed: string; timeLimit: string;
  cpus: number; gres: string; where: string }

/** Setu's jobs in the Slurm queue (names start with `setu-`), for `setu compute queue`. */
export async function slurmQueue(binDir?: string, all = false): Promise<SlurmQueueEntry[]> {
  const r = await runCommand(binDir ? join(binDir, 'squeue') : 'squeue', ['-h', '-o', '%i|%j|%T|%M|%l|%C|%b|%R']);
  if (r.code !== 0) throw new ExecutorError(`squeue failed: ${r.stderr.trim()}`);
  return r.stdout.split('\n').filter(Boolean).map((l) => l.split('|')).map((f) => ({
    id: f[0]!, name: f[1]!, state: f[2]!, elapsed: f[3]!, timeLimit: f[4]!, cpus: Number(f[5]),
    gres: f[6] === 'N/A' ? '' : f[6]!, where: f.slice(7).join('|'),
  })).filter((e) => all || e.name.startsWith('setu-'));
}
