/**
 * External trainers: a site runs any command (PyTorch on a GPU, R, a compiled binary) as its
 * trainer. The contract (docs/external-trainer.md) is files in a fresh work directory:
 *
 *   Setu writes   weights.safetensors  the global weights
 *                 task.json            round, model spec, fit config, seed, data file, paths
 *   trainer writes output.safetensors  the new local weights, same tensor names and shapes
 *                 result.json          {"numExamples": <int > 0>, "metrics": {name: number}}
 *
 * The command is an argv array run without a shell, in its own process group, with a minimal
 * environment (the agent's own secrets are not inherited) plus SETU_WORKDIR and SETU_TASK.
 * A timeout (or an abort) sends SIGTERM to the whole group, then SIGKILL after a grace period.
 * Outputs are validated before anything leaves the site: layout equal to the input, finite
 * values, a positive integer example count, numeric metrics.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { decodeSafetensors, encodeSafetensors } from '../../protocol/safetensors.js';
import { firstNonFinite, layoutMismatch, layoutOf, type Weights } from '../../protocol/tensors.js';
import type { FitConfig, ModelSpec } from '../../learning/types.js';

export interface ExternalTrainerConfig {
  /** argv: the program and its arguments; no shell is involved. */
  command: string[];
  /** Wall-clock limit for one task (default 30 minutes). */
  timeoutMs?: number;
  /** Between SIGTERM and SIGKILL (default 5 s). */
  killGraceMs?: number;
  /** Parent of the per-task work directories (default the OS temp dir). */
  workRoot?: string;
  /** Extra environment for the command (e.g. CUDA_VISIBLE_DEVICES, R_LIBS). */
  env?: Record<string, string>;
  /** Keep the work directory after the task (for debugging at the site). */
  keepWorkDir?: boolean;
  /** Bytes of stdout and stderr kept (the tail), default 16 KiB each. */
  tailBytes?: number;
}

export interface ExternalTask {
  round: number;
  model: ModelSpec;
  fit: FitConfig;
  seed: number;
  /** The data file the site config names; passed as an absolute path, never read by Setu here. */
  dataFile: string;
  /** Anything else the trainer should know (the study's data schema, normalisation statistics). */
  data?: Record<string, unknown>;
  weights: Weights;
}

export interface ExternalResult {
  weights: Weights;
  numExamples: number;
  metrics: Record<string, number>;
  stdoutTail: string;
  stderrTail: string;
  durationMs: number;
  /** Present when keepWorkDir is set. */
  workDir?: string;
}

export type ExternalFailure = 'config' | 'spawn' | 'exit' | 'timeout' | 'aborted' | 'output';

export class ExternalTrainerError extends Error {
  constructor(
    readonly kind: ExternalFailure,
    message: string,
    readonly stderrTail = '',
  ) {
    super(stderrTail ? `${message}\n--- stderr (tail) ---\n${stderrTail}` : message);
    this.name = 'ExternalTrainerError';
  }
}

/** The task.json a trainer reads. Version 1 of the contract. */
export interface TaskFile {
  setu: 1;
  round: number;
  seed: number;
  model: ModelSpec;
  fit: FitConfig;
  data: { path: string } & Record<string, unknown>;
  paths: { weights: string; output: string; result: string; workDir: string };
}

/** Variables passed through from the agent's environment; everything else must be named in `env`. */
const PASS_ENV = ['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR', 'CUDA_VISIBLE_DEVICES', 'SLURM_JOB_ID'];

export async function runExternalTrainer(cfg: ExternalTrainerConfig, task: ExternalTask, signal?: AbortSignal): Promise<ExternalResult> {
  if (!Array.isArray(cfg.command) || cfg.command.length === 0 || cfg.command.some((a) => typeof a !== 'string' || a.includes('\0'))) {
    throw new ExternalTrainerError('config', 'external trainer: command must be a non-empty array of strings');
  }
  const timeoutMs = cfg.timeoutMs ?? 30 * 60_000;
  if (!(timeoutMs > 0)) throw new ExternalTrainerError('config', `external trainer: timeoutMs must be > 0, got ${timeoutMs}`);
  const workDir = await mkdtemp(join(cfg.workRoot ?? tmpdir(), 'setu-trainer-'));
  try {
    const paths = {
      weights: join(workDir, 'weights.safetensors'),
      output: join(workDir, 'output.safetensors'),
      result: join(workDir, 'result.json'),
      workDir,
    };
    const taskFile: TaskFile = {
      setu: 1,
      round: task.round,
      seed: task.seed,
      model: task.model,
      fit: task.fit,
      data: { ...(task.data ?? {}), path: isAbsolute(task.dataFile) ? task.dataFile : resolve(task.dataFile) },
      paths,
    };
    const inputBytes = encodeSafetensors(task.weights, { format: 'setu', round: String(task.round) });
    await writeFile(paths.weights, inputBytes);
    await writeFile(join(workDir, 'task.json'), JSON.stringify(taskFile, null, 2) + '\n');

    const started = Date.now();
    const run = await runProcess(cfg, workDir, timeoutMs, signal);
    const durationMs = Date.now() - started;
    const who = `external trainer ${JSON.stringify(cfg.command[0])}`;
    if (run.outcome === 'timeout') throw new ExternalTrainerError('timeout', `${who} timed out after ${timeoutMs} ms and was killed`, run.stderr);
    if (run.outcome === 'aborted') throw new ExternalTrainerError('aborted', `${who} was stopped: the task was cancelled`, run.stderr);
    if (run.outcome === 'spawn') throw new ExternalTrainerError('spawn', `${who} could not be started: ${run.error}`);
    if (run.code !== 0) {
      const how = run.code === null ? `was killed by ${run.signal}` : `exited with status ${run.code}`;
      throw new ExternalTrainerError('exit', `${who} ${how}`, run.stderr);
    }
    const { weights, numExamples, metrics } = await readOutputs(paths, task.weights, inputBytes.length, run.stderr);
    const out: ExternalResult = { weights, numExamples, metrics, stdoutTail: run.stdout, stderrTail: run.stderr, durationMs };
    if (cfg.keepWorkDir) out.workDir = workDir;
    return out;
  } finally {
    if (!cfg.keepWorkDir) await rm(workDir, { recursive: true, force: true });
  }
}

async function readOutputs(
  paths: { output: string; result: string },
  input: Weights,
  inputSize: number,
  stderr: string,
): Promise<{ weights: Weights; numExamples: number; metrics: Record<string, number> }> {
  const bad = (msg: string): ExternalTrainerError => new ExternalTrainerError('output', `external trainer output: ${msg}`, stderr);
  let bytes: Uint8Array;
  try {
    // A plain Uint8Array copy: a Node Buffer may be a view into a shared pool, and Buffer's
    // `slice` does not copy, which the codec's aligned-copy step relies on.
    bytes = new Uint8Array(await readFile(paths.output));
  } catch {
    throw bad('output.safetensors was not written');
  }
  let weights: Weights;
  try {
    // Same tensors as the input, possibly in a wider dtype (F64) and with a longer header.
    weights = decodeSafetensors(bytes, { maxBytes: 2 * inputSize + 1_000_000 }).weights;
  } catch (e) {
    throw bad(`output.safetensors is not valid safetensors: ${(e as Error).message}`);
  }
  const mismatch = layoutMismatch(weights, layoutOf(input));
  if (mismatch) throw bad(`output.safetensors does not match the model: ${mismatch}`);
  const nonFinite = firstNonFinite(weights);
  if (nonFinite) throw bad(`output.safetensors: ${nonFinite}`);
  let result: unknown;
  try {
    result = JSON.parse(await readFile(paths.result, 'utf8'));
  } catch (e) {
    throw bad(`result.json is missing or not JSON (${(e as Error).message})`);
  }
  if (result === null || typeof result !== 'object' || Array.isArray(result)) throw bad('result.json must be an object');
  const r = result as Record<string, unknown>;
  const n = r['numExamples'];
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n <= 0) throw bad(`result.json: numExamples must be a positive integer, got ${JSON.stringify(n)}`);
  const m = r['metrics'] ?? {};
  if (m === null || typeof m !== 'object' || Array.isArray(m)) throw bad('result.json: metrics must be an object of numbers');
  const metrics: Record<string, number> = {};
  for (const [k, v] of Object.entries(m)) {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(`result.json: metric "${k}" must be a finite number, got ${JSON.stringify(v)}`);
    metrics[k] = v;
  }
  // Keep the input's tensor order (the canonical order of the model), not the file's sorted order.
  const ordered: Weights = {};
  for (const k of Object.keys(input)) ordered[k] = weights[k]!;
  return { weights: ordered, numExamples: n, metrics };
}

interface ProcessRun {
  outcome: 'exited' | 'timeout' | 'aborted' | 'spawn';
  code: number | null;
  signal: NodeJS.Signals | null;
  error?: string;
  stdout: string;
  stderr: string;
}

function runProcess(cfg: ExternalTrainerConfig, workDir: string, timeoutMs: number, signal?: AbortSignal): Promise<ProcessRun> {
  const env: Record<string, string> = {};
  for (const k of PASS_ENV) if (process.env[k] !== undefined) env[k] = process.env[k]!;
  Object.assign(env, cfg.env ?? {}, { SETU_WORKDIR: workDir, SETU_TASK: join(workDir, 'task.json') });
  const tailBytes = cfg.tailBytes ?? 16 * 1024;
  const grace = cfg.killGraceMs ?? 5000;
  return new Promise((done) => {
    const out = new Tail(tailBytes), err = new Tail(tailBytes);
    let outcome: ProcessRun['outcome'] = 'exited';
    let settled = false;
    const child = spawn(cfg.command[0]!, cfg.command.slice(1), { cwd: workDir, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    // Signals go to the whole process group (negative pid), so a trainer's children die with it.
    const killGroup = (sig: NodeJS.Signals): void => {
      if (child.pid === undefined) return;
      try {
        process.kill(-child.pid, sig);
      } catch {
        /* the group is already gone */
      }
    };
    let killTimer: NodeJS.Timeout | undefined;
    const stop = (why: 'timeout' | 'aborted'): void => {
      if (outcome !== 'exited') return;
      outcome = why;
      killGroup('SIGTERM');
      killTimer = setTimeout(() => killGroup('SIGKILL'), grace);
    };
    const timer = setTimeout(() => stop('timeout'), timeoutMs);
    const onAbort = (): void => stop('aborted');
    if (signal?.aborted) onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const finish = (r: Omit<ProcessRun, 'stdout' | 'stderr'>): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(killTimer);
      signal?.removeEventListener('abort', onAbort);
      done({ ...r, stdout: out.text(), stderr: err.text() });
    };
    child.on('error', (e) => finish({ outcome: 'spawn', code: null, signal: null, error: e.message }));
    // 'exit' fires when the trainer itself ends; leftovers in its group are killed so that
    // they can neither outlive the task nor hold the pipes open.
    child.on('exit', () => killGroup('SIGKILL'));
    child.on('close', (code, sig) => finish({ outcome, code, signal: sig }));
  });
}

/** Keeps the last `max` bytes written to it, decoded as UTF-8. */
class Tail {
  private chunks: Buffer[] = [];
  private size = 0;
  constructor(private readonly max: number) {}
  push(b: Buffer): void {
    this.chunks.push(b);
    this.size += b.length;
    while (this.chunks.length > 1 && this.size - this.chunks[0]!.length >= this.max) this.size -= this.chunks.shift()!.length;
  }
  text(): string {
    const all = Buffer.concat(this.chunks);
    return all.subarray(Math.max(0, all.length - this.max)).toString('utf8');
  }
}
