// The contract every executor (local process, Slurm, Kubernetes) keeps, and small helpers they share.
import { spawn } from 'node:child_process';
import type { JobResult, JobState, JobStatus, SchedulerKind, TrainingJob } from '../types.js';
import { TERMINAL_STATES } from '../types.js';

export interface JobHandle {
  readonly kind: SchedulerKind;
  /** The scheduler's id: a local job number, a Slurm job id, a Kubernetes Job name. */
  readonly id: string;
  readonly job: TrainingJob;
  readonly submittedAt: Date;
}

export interface WaitOptions {
  /** Called with each status seen while waiting (at least once), with the seconds since submission. */
  onProgress?: (status: JobStatus, elapsedSeconds: number) => void;
  /** How often to ask the scheduler, in milliseconds. */
  pollMs?: number;
  signal?: AbortSignal;
}

export interface Executor {
  readonly kind: SchedulerKind;
  submit(job: TrainingJob): Promise<JobHandle>;
  status(handle: JobHandle): Promise<JobStatus>;
  /** Resolves with the terminal status. */
  wait(handle: JobHandle, options?: WaitOptions): Promise<JobStatus>;
  cancel(handle: JobHandle): Promise<void>;
  /** Output tails and usage of a finished job; waits for the job to finish first. */
  collect(handle: JobHandle): Promise<JobResult>;
}

export const isTerminal = (s: JobState): boolean => TERMINAL_STATES.has(s);

/** Polls `status` until a terminal state; shared by the executors that ask a scheduler. */
export async function pollUntilDone(handle: JobHandle, status: (h: JobHandle) => Promise<JobStatus>,
  options: WaitOptions = {}, defaultPollMs = 1000): Promise<JobStatus> {
  const pollMs = options.pollMs ?? defaultPollMs;
  for (;;) {
    options.signal?.throwIfAborted();
    const s = await status(handle);
    options.onProgress?.(s, (Date.now() - handle.submittedAt.getTime()) / 1000);
    if (isTerminal(s.state)) return s;
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

/** Keeps the last `limit` bytes of a stream, cut at a character boundary. */
export class Tail {
  private chunks: Buffer[] = [];
  private size = 0;
  constructor(private readonly limit = 64 * 1024) {}
  push(b: Buffer): void {
    this.chunks.push(b);
    this.size += b.length;
    while (this.size - this.chunks[0]!.length >= this.limit) this.size -= this.chunks.shift()!.length;
  }
  toString(): string { return tailText(Buffer.concat(this.chunks), this.limit); }
}

export function tailText(b: Buffer, limit = 64 * 1024): string {
  const s = b.subarray(Math.max(0, b.length - limit)).toString('utf8');
  return b.length > limit ? s.replace(/^\uFFFD+/, '') : s;
}

export interface CommandResult { code: number; stdout: string; stderr: string }

/** Runs a program (no shell) with optional stdin, collecting its output; never rejects on a non-zero exit. */
export function runCommand(cmd: string, args: readonly string[], opts: { input?: string; timeoutMs?: number;
  env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    // Our own timer rather than spawn's `timeout`, which would hold the event loop open after a spawn error.
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('close', (code, sig) => clearTimeout(timer) ?? resolve({
      code: code ?? (sig ? 128 : 1),
      stdout: Buffer.concat(out).toString('utf8'),
      stderr: Buffer.concat(err).toString('utf8') + (sig ? `\n(${cmd} killed by ${sig})` : ''),
    }));
    child.stdin.on('error', () => { /* a program that exits without reading stdin is reported by its exit code */ });
    child.stdin.end(opts.input ?? '');
  });
}

export class ExecutorError extends Error {
  constructor(message: string) { super(message); this.name = 'ExecutorError'; }
}
