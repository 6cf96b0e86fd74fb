// Local process executor: the default. The job runs as a child in its own process group (so a timeout or cancel
// kills everything it started), without a shell interpreting its argv.
//
// CPU time, honestly: Node can only report its own rusage, and a child's /proc/<pid>/stat is gone once libuv reaps
// it. So the job runs under a tiny POSIX sh wrapper that passes argv through untouched ("$@"), waits for it, and
// prints the kernel's user+system time of its waited-for children (`times`) on a private pipe (fd 3). That counts
// the job and every descendant it waited for (the kernel folds those into the child's cutime/cstime), at clock-tick
// (10 ms) resolution. Processes that detach and are never waited for are not counted. A job killed with SIGKILL
// (it ignored SIGTERM for the grace period) leaves no `times` line; its CPU-seconds are then cpus × wall time,
// marked `allocated`. GPU-seconds are requested GPUs × wall time, as Slurm's AllocTRES-based figure is.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { constants as osConstants } from 'node:os';
import type { JobResult, JobStatus, TrainingJob } from '../types.js';
import { ExecutorError, Tail, type Executor, type JobHandle, type WaitOptions } from './executor.js';

const WRAPPER = `"$@" &
c=$!
trap 'kill -TERM "$c" 2>/dev/null' TERM
wait "$c"; s=$?
while kill -0 "$c" 2>/dev/null; do wait "$c"; s=$?; done
times >&3
exit $s`;

/** Parses `times` output (shell line, then children line: "0m1.230000s 0m0.010000s") to children's CPU seconds. */
export function parseTimes(text: string): number | undefined {
  const v = [...text.matchAll(/(\d+)m([\d.]+)s/g)].map((m) => Number(m[1]) * 60 + Number(m[2]));
  return v.length >= 4 ? v[2]! + v[3]! : undefined;
}

interface Running {
  child: ChildProcess;
  startedAt: number;
  endedAt?: number;
  status: JobStatus;
  requested?: 'cancelled' | 'timeout';
  times: string;
  out: Tail;
  err: Tail;
  done: Promise<void>;
  timer?: NodeJS.Timeout;
  killTimer?: NodeJS.Timeout;
}

export interface LocalExecutorOptions {
  /** Seconds between SIGTERM and SIGKILL on timeout or cancel. */
  killGraceSeconds?: number;
  /** Environment the job inherits before its own `env` (default: PATH, HOME, LANG, TZ of this process only). */
  baseEnv?: Record<string, string>;
}

function gpuEnv(gpus: number): Record<string, string> {
  if (gpus === 0) return { CUDA_VISIBLE_DEVICES: '' };
  return process.env.CUDA_VISIBLE_DEVICES !== undefined ? { CUDA_VISIBLE_DEVICES: process.env.CUDA_VISIBLE_DEVICES } : {};
}

export class LocalExecutor implements Executor {
  readonly kind = 'local' as const;
  private readonly jobs = new Map<string, Running>();
  private seq = 0;
  constructor(private readonly options: LocalExecutorOptions = {}) {}

  async submit(job: TrainingJob): Promise<JobHandle> {
    const st = await stat(job.workdir).catch(() => undefined);
    if (!st?.isDirectory()) throw new ExecutorError(`workdir ${job.workdir} is not a directory`);
    const id = `local-${process.pid}-${++this.seq}`;
    const base = this.options.baseEnv ?? Object.fromEntries(['PATH', 'HOME', 'LANG', 'TZ']
      .filter((k) => process.env[k] !== undefined).map((k) => [k, process.env[k]!]));
    const child = spawn('/bin/sh', ['-c', WRAPPER, 'setu-job', ...job.argv], {
      // No scheduler picks devices here: a job without GPUs sees none; one with GPUs sees the machine's own choice.
      cwd: job.workdir, env: { ...base, ...gpuEnv(job.gpus), ...job.env, SETU_TASK_ID: job.taskId, SETU_STUDY_ID: job.studyId, SETU_GPUS: String(job.gpus) },
      detached: true, stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
    });
    // Named like the Slurm executor's output files, so a workdir looks the same whichever executor ran it.
    const files: WriteStream[] = [createWriteStream(join(job.workdir, `setu-${id}.out`)),
      createWriteStream(join(job.workdir, `setu-${id}.err`))];
    const r: Running = { child, startedAt: Date.now(), status: { state: 'running' }, times: '', out: new Tail(),
      err: new Tail(), done: Promise.resolve() };
    child.stdout!.on('data', (b: Buffer) => { r.out.push(b); files[0]!.write(b); });
    child.stderr!.on('data', (b: Buffer) => { r.err.push(b); files[1]!.write(b); });
    (child.stdio[3] as NodeJS.ReadableStream).on('data', (b: Buffer) => { r.times += b.toString(); });
    r.done = new Promise<void>((resolve) => {
      child.on('error', (e) => { r.status = { state: 'failed', detail: e.message, exitCode: 127 }; });
      child.on('close', (code, signal) => {
        r.endedAt = Date.now();
        clearTimeout(r.timer);
        clearTimeout(r.killTimer);
        const exitCode = code ?? 128 + (signal ? osConstants.signals[signal] : 0);
        const state = r.requested ?? (exitCode === 0 ? 'completed' : 'failed');
        r.status = { state, exitCode, detail: signal ? `killed by ${signal}` : `exit ${exitCode}` };
        Promise.all(files.map((f) => new Promise((ok) => f.end(ok)))).then(() => resolve());
      });
    });
    r.timer = setTimeout(() => this.stop(r, 'timeout'), job.timeLimitSeconds * 1000);
    this.jobs.set(id, r);
    return { kind: 'local', id, job, submittedAt: new Date(r.startedAt) };
  }

  private stop(r: Running, why: 'cancelled' | 'timeout'): void {
    if (r.endedAt !== undefined || r.requested) return;
    r.requested = why;
    const kill = (sig: NodeJS.Signals) => { try { process.kill(-r.child.pid!, sig); } catch { /* already gone */ } };
    kill('SIGTERM');
    r.killTimer = setTimeout(() => kill('SIGKILL'), (this.options.killGraceSeconds ?? 5) * 1000);
  }

  private get(h: JobHandle): Running {
    const r = this.jobs.get(h.id);
    if (!r) throw new ExecutorError(`unknown local job ${h.id} (local jobs live only in the process that started them)`);
    return r;
  }

  async status(h: JobHandle): Promise<JobStatus> { return { ...this.get(h).status }; }

  async wait(h: JobHandle, options: WaitOptions = {}): Promise<JobStatus> {
    const r = this.get(h);
    const tick = () => options.onProgress?.({ ...r.status }, (Date.now() - r.startedAt) / 1000);
    tick();
    const timer = setInterval(tick, options.pollMs ?? 1000);
    const abort = new Promise<never>((_, rej) => options.signal?.addEventListener('abort',
      () => rej(options.signal!.reason), { once: true }));
    try {
      options.signal?.throwIfAborted();
      await Promise.race([r.done, abort]);
    } finally { clearInterval(timer); }
    tick();
    return { ...r.status };
  }

  async cancel(h: JobHandle): Promise<void> {
    const r = this.get(h);
    this.stop(r, 'cancelled');
    await r.done;
  }

  async collect(h: JobHandle): Promise<JobResult> {
    const r = this.get(h);
    await r.done;
    const wallSeconds = (r.endedAt! - r.startedAt) / 1000;
    const measured = parseTimes(r.times);
    return {
      status: { ...r.status },
      exitCode: r.status.exitCode ?? 1,
      stdoutTail: r.out.toString(),
      stderrTail: r.err.toString(),
      usage: {
        cpuSeconds: measured ?? h.job.cpus * wallSeconds,
        cpuBasis: measured === undefined ? 'allocated' : 'measured',
        gpuSeconds: h.job.gpus * wallSeconds,
        wallSeconds,
      },
    };
  }
}
