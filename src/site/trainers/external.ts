/**
 * External trainers: a site runs any command (PyTorch on a GPU, R, a compiled binary) as its trainer, through
 * version 2 of the contract (docs/external-trainer.md), which is files in a fresh work directory:
 *
 *   Setu writes   weights.safetensors  the model to start from (any tensors, in their own dtypes)
 *                 task.json            kind (fit | evaluate), round, seed, model, fit config, tensors, data, DP plan, paths
 *   trainer writes output.safetensors  fit: the trained model, the same tensor names, shapes and dtypes
 *                 result.json          {"fit": {numExamples, metrics}, "evaluate": {numExamples, metrics}, "dpSgd": {…}}
 *   and may print `setu:progress {"step": 3, "of": 10, "metrics": {"loss": 0.4}}` lines on stdout.
 *
 * The command is an argv array run without a shell, in its own process group, with a minimal environment (the
 * agent's own secrets are not inherited) plus SETU_WORKDIR and SETU_TASK. A timeout (or an abort) sends SIGTERM to
 * the whole group, then SIGKILL after a grace period. Outputs are validated before anything leaves the site:
 * layout equal to the input, finite values, positive integer example counts, finite metrics under sane names, and a
 * DP-SGD declaration at least as private as the plan the agent asked for. Every failure is an ExternalTrainerError
 * whose `kind` says which, and whose message the agent reports as the task's error.
 */
import { spawn } from 'node:child_process';
import { copyFile, link, mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { SafetensorsError, encodeSafetensorsHeader, encodeValues, headerLayout, readSafetensorsHeader, viewTensors } from '../../protocol/safetensors.js';
import { dtypeOf, firstNonFinite, layoutDifference, layoutOf, mapWeights, type Weights, type WeightsLayout } from '../../protocol/tensors.js';
import { TaskProgressSchema, checkValue, type TaskMessage, type TaskProgress } from '../../protocol/api.js';
import type { FitConfig } from '../../learning/types.js';
import type { DpSgdPlan, EvaluateOutcome, FitOutcome, Trainer, TrainerInput, TrainerProgress } from './trainer.js';
import { releaseOf } from '../tensor-rules.js';
import type { SiteConfig } from '../config.js';
import { datasetFile } from '../datasets.js';

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
  /**
   * Runs the command somewhere other than a child process here: a placed job on shared compute (site/placed-trainer.ts).
   * The work directory must then be one the job can read (workRoot on a filesystem the compute nodes share).
   */
  launch?: Launcher;
}

/** What a launcher is given: the command, its environment (beyond the launcher's own), the work directory, the limit. */
export interface LaunchRequest {
  command: string[];
  env: Record<string, string>;
  workDir: string;
  timeoutMs: number;
  signal?: AbortSignal;
  onProgress?: (p: TrainerProgress) => void;
}
/** How the command ended, in a child process's terms. */
export interface LaunchOutcome {
  outcome: 'exited' | 'timeout' | 'aborted' | 'spawn';
  code: number | null;
  signal: NodeJS.Signals | null;
  error?: string;
  stdout: string;
  stderr: string;
  lastProgress?: TrainerProgress;
}
export type Launcher = (r: LaunchRequest) => Promise<LaunchOutcome>;

/** Devices a trainer says it trained on (result.json `device`; the SDK fills it from PyTorch). */
export interface DeviceUse {
  type: string;
  count: number;
  names?: string[];
}

/** One task for the trainer, in the agent's terms (the contract's task.json is built from it). */
export interface ExternalTask {
  kind: 'fit' | 'evaluate';
  taskId: string;
  studyId: string;
  round: number;
  /** The site's name, so a trainer can derive its own seeds (the SDK's `task_seed`). */
  site: string;
  /** The study's seed. */
  seed: number;
  model: TaskMessage['model'];
  /** Fit tasks only. */
  fit?: FitConfig;
  /** The study's tensor rules resolved to names (local and skip; the rest are aggregated). */
  tensorRules?: TaskMessage['tensorRules'];
  /** The data file the site config names; passed as an absolute path, never read by Setu here. */
  dataFile: string;
  /** Anything else the trainer should know about the data (the study's data schema, normalisation statistics). */
  data?: Record<string, unknown>;
  /** The model to start from. */
  weights: Weights;
  /** Sample-level DP-SGD the trainer must apply (the agent's plan), or refuse the task. */
  dpSgd?: DpSgdPlan;
  /**
   * File to file (release-file.ts): the model to start from is this file (hard-linked in as weights.safetensors;
   * `weights` is then not read), and a fit's output file is handed to `onOutput` once result.json checks out, instead
   * of being read into memory (ExternalResult.weights is then absent). An Error thrown by onOutput is the trainer's
   * output error.
   */
  files?: { input: string; layout: WeightsLayout; onOutput: (output: string, r: { fit: Measured; evaluate?: Measured; gpuSeconds: number }) => void };
}

export interface Measured {
  numExamples: number;
  metrics: Record<string, number>;
}

export interface ExternalResult {
  /** Fit tasks: the trained model (all tensors, as given). */
  weights?: Weights;
  fit?: Measured;
  /** The evaluation of the given weights (fit tasks: of the incoming model, before training). */
  evaluate?: Measured;
  /** What the trainer did for sample-level DP-SGD (present exactly when the task asked for it). */
  dpSgd?: { noiseMultiplier: number; sampleRate: number; steps: number };
  /** The devices the trainer reported, if it did. */
  device?: DeviceUse;
  stdoutTail: string;
  stderrTail: string;
  durationMs: number;
  /** Present when keepWorkDir is set. */
  workDir?: string;
}

export type ExternalFailure = 'config' | 'spawn' | 'exit' | 'timeout' | 'aborted' | 'output' | 'dp';

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

/** The task.json a trainer reads: version 2 of the contract. */
export interface TaskFile {
  setu: 2;
  kind: 'fit' | 'evaluate';
  taskId: string;
  studyId: string;
  round: number;
  site: string;
  seed: number;
  model: TaskMessage['model'];
  fit?: FitConfig;
  /** Every tensor of weights.safetensors, with the study's rule for it. */
  tensors: { name: string; dtype: string; shape: number[]; rule: 'aggregate' | 'local' | 'skip' }[];
  data: { path: string } & Record<string, unknown>;
  dpSgd?: DpSgdPlan;
  paths: { weights: string; output: string; result: string; workDir: string };
}

export const CONTRACT_VERSION = 2;
/** A stdout line that starts with this is a progress report, not ordinary output. */
export const PROGRESS_PREFIX = 'setu:progress ';

/** Variables passed through from the agent's environment; everything else must be named in `env`. */
const PASS_ENV = ['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR', 'CUDA_VISIBLE_DEVICES', 'SLURM_JOB_ID'];
/** Metric names a trainer may report (so they are ordinary keys everywhere they travel). */
const METRIC_NAME = /^[A-Za-z][A-Za-z0-9_.-]{0,63}$/;

export async function runExternalTrainer(cfg: ExternalTrainerConfig, task: ExternalTask, signal?: AbortSignal, onProgress?: (p: TrainerProgress) => void): Promise<ExternalResult> {
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
    const local = new Set(task.tensorRules?.local ?? []), skip = new Set(task.tensorRules?.skip ?? []);
    const taskFile: TaskFile = {
      setu: CONTRACT_VERSION,
      kind: task.kind,
      taskId: task.taskId,
      studyId: task.studyId,
      round: task.round,
      site: task.site,
      seed: task.seed,
      model: task.model,
      ...(task.fit ? { fit: task.fit } : {}),
      tensors: Object.entries(task.files?.layout ?? layoutOf(task.weights)).map(([name, t]) => ({ name, dtype: t.dtype, shape: [...t.shape], rule: local.has(name) ? 'local' : skip.has(name) ? 'skip' : 'aggregate' })),
      data: { ...(task.data ?? {}), path: isAbsolute(task.dataFile) ? task.dataFile : resolve(task.dataFile) },
      ...(task.dpSgd ? { dpSgd: task.dpSgd } : {}),
      paths,
    };
    const inputSize = task.files ? await linkInput(task.files.input, paths.weights) : await writeWeightsFile(paths.weights, task.weights, { format: 'setu', round: String(task.round) });
    await writeFile(join(workDir, 'task.json'), JSON.stringify(taskFile, null, 2) + '\n');

    const started = Date.now();
    const run = cfg.launch
      ? await cfg.launch({ command: cfg.command, env: { ...(cfg.env ?? {}), ...contractEnv(workDir) }, workDir, timeoutMs, ...(signal ? { signal } : {}), ...(onProgress ? { onProgress } : {}) })
      : await runProcess(cfg, workDir, timeoutMs, signal, onProgress);
    const durationMs = Date.now() - started;
    const who = `external trainer ${JSON.stringify(cfg.command.join(' '))}`;
    const last = run.lastProgress ? ` (its last progress: ${describeProgress(run.lastProgress)})` : ' (it reported no progress)';
    if (run.outcome === 'timeout') throw new ExternalTrainerError('timeout', `${who} was still running after ${timeoutMs} ms and was killed${last}`, run.stderr);
    if (run.outcome === 'aborted') throw new ExternalTrainerError('aborted', `${who} was stopped: the task was cancelled`, run.stderr);
    if (run.outcome === 'spawn') throw new ExternalTrainerError('spawn', `${who} could not be started: ${run.error}`);
    if (run.code !== 0) {
      const how = run.code === null ? `was killed by ${run.signal}` : `exited with status ${run.code}`;
      throw new ExternalTrainerError('exit', `${who} ${how}`, run.stderr);
    }
    const out = await readOutputs(paths, task, inputSize, run.stderr, durationMs);
    const res: ExternalResult = { ...out, stdoutTail: run.stdout, stderrTail: run.stderr, durationMs };
    if (cfg.keepWorkDir) res.workDir = workDir;
    return res;
  } finally {
    if (!cfg.keepWorkDir) await rm(workDir, { recursive: true, force: true });
  }
}

/**
 * The trainer's input: what encodeSafetensors would give (tensors sorted by name), written a tensor at a time, F32
 * tensors straight from their arrays, so no model-sized buffer is made for it. Returns the file's size.
 */
async function writeWeightsFile(file: string, weights: Weights, metadata: Record<string, string>): Promise<number> {
  const names = Object.keys(weights).sort();
  const head = encodeSafetensorsHeader(names.map((name) => ({ name, dtype: dtypeOf(weights[name]!), shape: weights[name]!.shape })), metadata);
  const fh = await open(file, 'w');
  try {
    await fh.write(head.bytes);
    for (const name of names) {
      const t = weights[name]!;
      const dtype = dtypeOf(t);
      if (t.data.length !== t.shape.reduce((a, b) => a * b, 1)) throw new SafetensorsError(`tensor "${name}": data length ${t.data.length} does not match shape [${t.shape}]`);
      const bytes = dtype === 'F32' && HOST_LE ? new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength) : encodeValues(t.data, dtype, `tensor "${name}"`);
      for (let at = 0; at < bytes.length;) at += (await fh.write(bytes, at, bytes.length - at)).bytesWritten;
    }
  } finally {
    await fh.close();
  }
  return head.bytes.length + head.dataBytes;
}

/** The input file as weights.safetensors without copying it (a copy only across filesystems). Returns its size. */
async function linkInput(input: string, to: string): Promise<number> {
  try {
    await link(input, to);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EXDEV') throw e;
    await copyFile(input, to);
  }
  return (await stat(to)).size;
}

const HOST_LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function describeProgress(p: TrainerProgress): string {
  const parts = [p.step !== undefined ? `step ${p.step}${p.of !== undefined ? ` of ${p.of}` : ''}` : '', ...Object.entries(p.metrics ?? {}).map(([k, v]) => `${k} ${v}`), p.message ?? ''];
  return parts.filter(Boolean).join(', ') || 'an empty line';
}

async function readOutputs(paths: { output: string; result: string }, task: ExternalTask, inputSize: number, stderr: string, durationMs: number): Promise<Omit<ExternalResult, 'stdoutTail' | 'stderrTail' | 'durationMs'>> {
  const bad = (msg: string): ExternalTrainerError => new ExternalTrainerError('output', `external trainer output: ${msg}`, stderr);
  let result: unknown;
  try {
    result = JSON.parse(await readFile(paths.result, 'utf8'));
  } catch (e) {
    throw bad(`result.json is missing or not JSON (${(e as Error).message})`);
  }
  if (result === null || typeof result !== 'object' || Array.isArray(result)) throw bad('result.json must be an object');
  const r = result as Record<string, unknown>;
  for (const k of Object.keys(r)) if (k !== 'fit' && k !== 'evaluate' && k !== 'dpSgd' && k !== 'device') throw bad(`result.json: unexpected field "${k}" (contract version 2 has fit, evaluate, dpSgd, device)`);
  const out: Omit<ExternalResult, 'stdoutTail' | 'stderrTail' | 'durationMs'> = {};
  if (r['device'] !== undefined) out.device = deviceUse(r['device'], bad);
  if (r['evaluate'] !== undefined) out.evaluate = measured(r['evaluate'], 'evaluate', bad);
  if (task.kind === 'evaluate') {
    if (!out.evaluate) throw bad('result.json: an evaluate task must report "evaluate": {"numExamples": …, "metrics": {…}}');
    return out;
  }
  if (r['fit'] === undefined) throw bad('result.json: a fit task must report "fit": {"numExamples": …, "metrics": {…}}');
  out.fit = measured(r['fit'], 'fit', bad);
  if (task.dpSgd) out.dpSgd = dpDeclared(r['dpSgd'], task.dpSgd, stderr);
  else if (r['dpSgd'] !== undefined) throw bad('result.json: "dpSgd" is reported but the task asked for no DP-SGD');

  if (task.files) {
    try {
      task.files.onOutput(paths.output, { fit: out.fit, ...(out.evaluate ? { evaluate: out.evaluate } : {}), gpuSeconds: declaredGpuSeconds(out.device, durationMs) });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw bad('output.safetensors was not written');
      throw bad((e as Error).message);
    }
    return out;
  }
  let bytes: Uint8Array;
  try {
    // readFile's Buffer is its own allocation (not the small-buffer pool): the tensors are viewed in it, not copied.
    bytes = await readFile(paths.output);
  } catch {
    throw bad('output.safetensors was not written');
  }
  let weights: Weights;
  try {
    // Same tensors as the input, in the same dtypes; the header (metadata) may be longer.
    const h = readSafetensorsHeader(bytes, { maxBytes: inputSize + 1_000_000 });
    const diff = layoutDifference(headerLayout(h), layoutOf(task.weights));
    if (diff) throw bad(`output.safetensors does not match the model: ${diff}`);
    weights = viewTensors(bytes, h);
  } catch (e) {
    if (e instanceof SafetensorsError) throw bad(`output.safetensors is not valid safetensors: ${e.message}`);
    throw e;
  }
  const nonFinite = firstNonFinite(weights);
  if (nonFinite) throw bad(`output.safetensors: ${nonFinite}`);
  // Keep the input's tensor order (the canonical order of the model), not the file's sorted order.
  out.weights = mapWeights(Object.keys(task.weights), (k) => weights[k]!);
  return out;
}

/** result.json `device`: {"type": "cuda", "count": 1, "names": ["NVIDIA H100"]}; type cpu (or count 0) uses no GPU. */
function deviceUse(v: unknown, bad: (m: string) => ExternalTrainerError): DeviceUse {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw bad('result.json: "device" must be an object {"type": "cuda" | "cpu" | …, "count": N}');
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) if (k !== 'type' && k !== 'count' && k !== 'names') throw bad(`result.json: device: unexpected field "${k}" (allowed: type, count, names)`);
  if (typeof o['type'] !== 'string' || !/^[a-z][a-z0-9_]{0,15}$/.test(o['type'])) throw bad(`result.json: device.type must be a lower-case device kind such as "cuda" or "cpu", got ${JSON.stringify(o['type'])}`);
  const count = o['count'];
  if (typeof count !== 'number' || !Number.isInteger(count) || count < 0 || count > 1024) throw bad(`result.json: device.count must be an integer from 0 to 1024, got ${JSON.stringify(count)}`);
  const names = o['names'];
  if (names !== undefined && (!Array.isArray(names) || names.length > 1024 || names.some((n) => typeof n !== 'string' || n.length > 200))) throw bad('result.json: device.names must be a list of strings (at most 200 characters each)');
  return { type: o['type'], count, ...(names ? { names: names as string[] } : {}) };
}

/** GPU-seconds a trainer's own report supports: its GPUs × its run time (a CPU run, or none reported, is 0). */
export function declaredGpuSeconds(device: DeviceUse | undefined, durationMs: number): number {
  return device && device.type !== 'cpu' ? device.count * (durationMs / 1000) : 0;
}

function measured(v: unknown, field: string, bad: (m: string) => ExternalTrainerError): Measured {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw bad(`result.json: "${field}" must be an object with numExamples and metrics`);
  const o = v as Record<string, unknown>;
  const n = o['numExamples'];
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n <= 0) throw bad(`result.json: ${field}.numExamples must be a positive integer, got ${JSON.stringify(n)}`);
  const m = o['metrics'] ?? {};
  if (m === null || typeof m !== 'object' || Array.isArray(m)) throw bad(`result.json: ${field}.metrics must be an object of numbers`);
  const metrics: Record<string, number> = {};
  for (const [k, x] of Object.entries(m)) {
    if (!METRIC_NAME.test(k)) throw bad(`result.json: ${field}.metrics: name ${JSON.stringify(k)} must start with a letter and hold only letters, digits, _ . - (at most 64)`);
    if (typeof x !== 'number' || !Number.isFinite(x)) throw bad(`result.json: ${field}.metrics.${k} must be a finite number, got ${JSON.stringify(x)}`);
    metrics[k] = x;
  }
  return { numExamples: n, metrics };
}

/**
 * The trainer's report of its DP-SGD must be at least as private as the plan: no less noise, no higher sampling
 * rate, no more steps (the accountant then charges what it did). Anything else is refused: the release would cost
 * more than the site's budget allowed for.
 */
function dpDeclared(v: unknown, plan: DpSgdPlan, stderr: string): { noiseMultiplier: number; sampleRate: number; steps: number } {
  const fail = (m: string) => new ExternalTrainerError('dp', `external trainer DP-SGD: ${m}`, stderr);
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw fail('the task asked for DP-SGD and result.json reports no "dpSgd": {noiseMultiplier, sampleRate, steps}');
  const o = v as Record<string, unknown>;
  const num = (k: string) => {
    const x = o[k];
    if (typeof x !== 'number' || !Number.isFinite(x) || x < 0) throw fail(`dpSgd.${k} must be a finite number >= 0, got ${JSON.stringify(x)}`);
    return x;
  };
  const d = { noiseMultiplier: num('noiseMultiplier'), sampleRate: num('sampleRate'), steps: num('steps') };
  if (!Number.isInteger(d.steps)) throw fail(`dpSgd.steps must be an integer, got ${d.steps}`);
  if (d.noiseMultiplier < plan.noiseMultiplier) throw fail(`noise multiplier ${d.noiseMultiplier} is below the plan's ${plan.noiseMultiplier}`);
  if (d.sampleRate > plan.sampleRate) throw fail(`sampling rate ${d.sampleRate} is above the plan's ${plan.sampleRate}`);
  if (d.steps > plan.steps) throw fail(`${d.steps} steps exceed the plan's ${plan.steps}`);
  return d;
}

type ProcessRun = LaunchOutcome;

/** The contract's own variables: where the task's files are. */
function contractEnv(workDir: string): Record<string, string> {
  return { SETU_WORKDIR: workDir, SETU_TASK: join(workDir, 'task.json') };
}

function runProcess(cfg: ExternalTrainerConfig, workDir: string, timeoutMs: number, signal?: AbortSignal, onProgress?: (p: TrainerProgress) => void): Promise<ProcessRun> {
  const env: Record<string, string> = {};
  for (const k of PASS_ENV) if (process.env[k] !== undefined) env[k] = process.env[k]!;
  Object.assign(env, cfg.env ?? {}, contractEnv(workDir));
  const tailBytes = cfg.tailBytes ?? 16 * 1024;
  const grace = cfg.killGraceMs ?? 5000;
  return new Promise((done) => {
    const out = new Tail(tailBytes), err = new Tail(tailBytes);
    let outcome: ProcessRun['outcome'] = 'exited';
    let settled = false;
    let lastProgress: TrainerProgress | undefined;
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
    const lines = new LineSplitter((line) => {
      const p = parseProgress(line);
      if (!p) return;
      lastProgress = p;
      onProgress?.(p);
    });
    child.stdout.on('data', (b: Buffer) => {
      out.push(b);
      lines.push(b);
    });
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const finish = (r: Omit<ProcessRun, 'stdout' | 'stderr'>): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(killTimer);
      signal?.removeEventListener('abort', onAbort);
      done({ ...r, stdout: out.text(), stderr: err.text(), ...(lastProgress ? { lastProgress } : {}) });
    };
    child.on('error', (e) => finish({ outcome: 'spawn', code: null, signal: null, error: e.message }));
    // 'exit' fires when the trainer itself ends; leftovers in its group are killed so that
    // they can neither outlive the task nor hold the pipes open.
    child.on('exit', () => killGroup('SIGKILL'));
    child.on('close', (code, sig) => finish({ outcome, code, signal: sig }));
  });
}

/** A `setu:progress {json}` line as a TrainerProgress; anything malformed is ordinary output, not an error. */
export function parseProgress(line: string): TaskProgress | undefined {
  if (!line.startsWith(PROGRESS_PREFIX)) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(line.slice(PROGRESS_PREFIX.length));
  } catch {
    return undefined;
  }
  return checkValue(TaskProgressSchema, v).length === 0 ? (v as TaskProgress) : undefined;
}

/** Calls `onLine` for every complete line written to it (lines longer than 64 KiB are dropped). */
class LineSplitter {
  private buf = '';
  constructor(private readonly onLine: (line: string) => void) {}
  push(b: Buffer): void {
    this.buf += b.toString('utf8');
    let i;
    while ((i = this.buf.indexOf('\n')) >= 0) {
      this.onLine(this.buf.slice(0, i).replace(/\r$/, ''));
      this.buf = this.buf.slice(i + 1);
    }
    if (this.buf.length > 65536) this.buf = '';
  }
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

/** Where a task's data is, for the trainer: the site's file and what the study says about it. */
export type DataFor = (task: TaskMessage) => { file: string; data?: Record<string, unknown> };

/**
 * The site's own program behind the agent's Trainer seam. The agent hands it the model to start from (the global
 * model with this site's `local` tensors in place); it returns the aggregated tensors to upload and the local ones
 * to keep (`commit`), the trainer's own evaluation of the incoming model, and what it did for DP-SGD.
 */
export class ExternalTrainer implements Trainer {
  readonly description: string;
  constructor(
    private readonly cfg: ExternalTrainerConfig,
    private readonly dataFor: DataFor,
  ) {
    this.description = `external (${cfg.command.join(' ')})`.slice(0, 200);
  }

  private task(kind: 'fit' | 'evaluate', input: TrainerInput): ExternalTask {
    const t = input.task;
    const { file, data } = this.dataFor(t);
    return {
      kind, taskId: t.taskId, studyId: t.studyId, round: t.round, site: input.siteName, seed: t.seed, model: t.model,
      ...(kind === 'fit' && t.fit ? { fit: t.fit } : {}),
      ...(t.tensorRules ? { tensorRules: t.tensorRules } : {}),
      dataFile: file, ...(data ? { data } : {}), weights: input.global,
      ...(kind === 'fit' && input.dpSgd ? { dpSgd: input.dpSgd } : {}),
    };
  }

  async fit(input: TrainerInput): Promise<FitOutcome> {
    if (input.task.kind !== 'fit' || !input.task.fit) throw new ExternalTrainerError('config', `task ${input.task.taskId} is a ${input.task.kind} task, not a fit task`);
    const r = await runExternalTrainer(this.cfg, this.task('fit', input), input.signal, input.progress);
    const { upload, commit } = releaseOf(r.weights!, input.global, input.task.tensorRules);
    return {
      weights: upload,
      numExamples: r.fit!.numExamples,
      trainMetrics: r.fit!.metrics,
      ...(r.evaluate ? { evalMetrics: r.evaluate.metrics, evalExamples: r.evaluate.numExamples } : {}),
      ...(r.dpSgd ? { dpSgd: r.dpSgd } : {}),
      ...(r.device ? { gpuSeconds: declaredGpuSeconds(r.device, r.durationMs) } : {}),
      commit,
    };
  }

  /**
   * A fit file to file (release-file.ts): the trainer starts from `files.input` (input.global is not read) and its
   * output file goes to `files.onOutput`; no tensor of the model is held here. Only for studies without tensor rules.
   */
  async fitFile(input: TrainerInput, files: NonNullable<ExternalTask['files']>): Promise<Omit<FitOutcome, 'weights'>> {
    if (input.task.kind !== 'fit' || !input.task.fit) throw new ExternalTrainerError('config', `task ${input.task.taskId} is a ${input.task.kind} task, not a fit task`);
    const r = await runExternalTrainer(this.cfg, { ...this.task('fit', input), files }, input.signal, input.progress);
    return {
      numExamples: r.fit!.numExamples,
      trainMetrics: r.fit!.metrics,
      ...(r.evaluate ? { evalMetrics: r.evaluate.metrics, evalExamples: r.evaluate.numExamples } : {}),
      ...(r.dpSgd ? { dpSgd: r.dpSgd } : {}),
      ...(r.device ? { gpuSeconds: declaredGpuSeconds(r.device, r.durationMs) } : {}),
      commit: [],
    };
  }

  async evaluate(input: TrainerInput): Promise<EvaluateOutcome> {
    const r = await runExternalTrainer(this.cfg, this.task('evaluate', input), input.signal, input.progress);
    return { metrics: r.evaluate!.metrics, examples: r.evaluate!.numExamples, ...(r.device ? { gpuSeconds: declaredGpuSeconds(r.device, r.durationMs) } : {}) };
  }
}

/** The external trainer a site's config describes (site.yaml `trainer: {kind: external, …}`). */
export function externalTrainerOf(site: SiteConfig, placed?: { launch: Launcher; workRoot: string }): ExternalTrainer {
  const t = site.trainer;
  if (t?.kind !== 'external') throw new Error('the site config names no external trainer');
  const cfg: ExternalTrainerConfig = {
    // ./x and ../x are paths relative to the config file; the trainer itself runs in its task's work directory.
    command: t.command.map((a) => (a.startsWith('./') || a.startsWith('../') ? resolve(site.configDir, a) : a)),
    ...(t.timeoutSeconds !== undefined ? { timeoutMs: t.timeoutSeconds * 1000 } : {}),
    ...(t.killGraceSeconds !== undefined ? { killGraceMs: t.killGraceSeconds * 1000 } : {}),
    ...(t.env ? { env: t.env } : {}),
    ...(t.workDir ? { workRoot: resolve(site.configDir, t.workDir) } : {}),
    ...(t.keepWorkDir ? { keepWorkDir: true } : {}),
    ...(placed ? { launch: placed.launch, workRoot: placed.workRoot } : {}),
  };
  return new ExternalTrainer(cfg, (task) => ({
    file: datasetFile(site, task.dataset, task.studyId),
    ...(task.dataSchema || task.normStats ? { data: { ...(task.dataSchema ? { schema: task.dataSchema } : {}), ...(task.normStats ? { stats: task.normStats } : {}) } } : {}),
  }));
}
