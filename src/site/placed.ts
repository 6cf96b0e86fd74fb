/**
 * The site's side of governance and the compute federation:
 *
 * - Local policy: a site may keep its own policy file (`policy:` in site.yaml, the site-local format of
 *   governance/policy.ts). Whatever it sets wins over the jurisdiction's file, as in NVIDIA FLARE: the agent
 *   refuses a task that breaks it and reports the refusal to the coordinator, and trains nothing.
 * - Placed compute: a site without compute of its own (`compute: {mode: placed}`) asks the coordinator where
 *   each fit task runs, writes the task's work directory (global weights, task.json), and submits a job to
 *   that resource's executor (a local process, or Slurm via sbatch/squeue/sacct) that runs
 *   `setu site run-task --workdir <dir>`; it then collects the output and the job's accounted CPU/GPU time.
 * - Usage: every fit task's CPU- and GPU-seconds are reported (placed: the executor's accounting; own compute:
 *   this process's CPU time while training) so the coordinator's ledger covers every task.
 *
 * The work directory lives under the site's state directory: on a cluster it must be on a filesystem the
 * compute nodes share (the single-node cluster of .ci/setup-slurm.sh shares everything).
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TaskMessage } from '../protocol/api.js';
import { decodeSafetensors, encodeSafetensors } from '../protocol/safetensors.js';
import type { Weights } from '../protocol/tensors.js';
import { firstNonFinite, layoutMismatch, layoutOf } from '../protocol/tensors.js';
import { parseSiteLocalPolicy, type SiteLocalPolicy, PROTECTIONS } from '../governance/policy.js';
import type { ComputeResource, JobResult } from '../compute/types.js';
import { executorFor } from '../compute/executors/index.js';
import { createModel } from '../learning/models/registry.js';
import { fit } from '../learning/client.js';
import { BatchStream, type BatchStreamState } from '../learning/batches.js';
import { createRng, deriveSeed } from '../learning/rng.js';
import type { SiteConfig } from './config.js';
import { loadSiteDataset } from './datasets.js';

// ---------------------------------------------------------------- local policy

export function loadLocalPolicy(cfg: SiteConfig): SiteLocalPolicy | undefined {
  const p = (cfg as { policy?: string }).policy;
  if (!p) return undefined;
  const file = resolve(cfg.configDir, p);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`cannot read the site's local policy ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return parseSiteLocalPolicy(text, file);
}

export interface TaskFacts {
  /** Training examples this site holds for the task's dataset. */
  trainExamples: number;
  /** The site's own jurisdiction (site.yaml `jurisdiction:`), for "same" in computeJurisdictions. */
  siteJurisdiction?: string;
  /** Where the task would train: the placed resource's jurisdiction, or the site's own. */
  computeJurisdiction?: string;
}

/** What the task says about protection of its update, if anything (the study's privacy settings). */
function taskPrivacy(task: TaskMessage): { secagg: boolean; dp: { epsilon: number; delta: number } | null } | null {
  const t = task as unknown as Record<string, any>;
  const p = t.privacy;
  if (!p && t.secagg === undefined && t.dp === undefined) return null;
  const sec = p?.secagg ?? t.secagg;
  const dp = p?.dp ?? t.dp;
  const eps = Number(dp?.epsilon ?? dp?.targetEpsilon);
  const delta = Number(dp?.delta ?? dp?.targetDelta);
  return { secagg: sec === true || (typeof sec === 'object' && sec !== null && sec.enabled !== false), dp: dp && Number.isFinite(eps) && Number.isFinite(delta) ? { epsilon: eps, delta } : null };
}

/**
 * Why the site's own policy refuses `task`, or null when it allows it. Checks what the site can know by itself:
 * the examples behind its update, where its data would be trained, and (when the task carries the study's
 * privacy settings) the protection its update gets.
 */
export function localPolicyRefusal(policy: SiteLocalPolicy | undefined, task: TaskMessage, f: TaskFacts): string | null {
  if (!policy || task.kind !== 'fit' || !task.fit) return null;
  const r = policy.rules;
  const problems: string[] = [];
  if (r.minExamplesPerUpdate !== undefined) {
    const behind = task.fit.localSteps !== undefined ? Math.min(f.trainExamples, task.fit.localSteps * task.fit.batchSize) : f.trainExamples;
    if (behind < r.minExamplesPerUpdate) problems.push(`min-examples: the update would rest on ${behind} examples; this site's policy requires at least ${r.minExamplesPerUpdate}`);
  }
  if (r.computeJurisdictions !== undefined && f.computeJurisdiction) {
    const allowed = r.computeJurisdictions.map((j) => (j === 'same' ? f.siteJurisdiction ?? 'same' : j));
    if (!allowed.includes(f.computeJurisdiction)) problems.push(`compute-location: training would run in ${f.computeJurisdiction}; this site's policy allows only ${allowed.join(', ')}`);
  }
  const need = r.updateProtection?.crossBorder ?? r.updateProtection?.domestic;
  const priv = taskPrivacy(task);
  if (need && need !== 'none' && (PROTECTIONS as readonly string[]).includes(need)) {
    const maxEps = r.updateProtection?.maxEpsilon ?? Infinity;
    const maxDelta = r.updateProtection?.maxDelta ?? Infinity;
    const dpOk = !!priv?.dp && priv.dp.epsilon <= maxEps && priv.dp.delta <= maxDelta;
    const sec = !!priv?.secagg;
    const ok = need === 'secagg' ? sec : need === 'dp' ? dpOk : need === 'secagg-or-dp' ? sec || dpOk : sec && dpOk;
    if (!ok) problems.push(`update-protection: this site's policy requires ${need}${need.includes('dp') ? ` (ε ≤ ${maxEps}, δ ≤ ${maxDelta})` : ''} for its updates; the task ${priv ? `has ${priv.secagg ? 'SecAgg+' : 'no SecAgg+'} and ${priv.dp ? `DP ε = ${priv.dp.epsilon}` : 'no DP'}` : 'states no protection'}`);
  }
  return problems.length ? problems.join('; ') : null;
}

// ---------------------------------------------------------------- the fit step, wherever it runs

export interface FitStepInput {
  task: TaskMessage;
  siteName: string;
  global: Weights;
  stream: BatchStreamState | undefined;
  clientState: Weights | undefined;
}
export interface FitStepOutput {
  weights: Weights;
  numExamples: number;
  loss: number;
  clientState?: Weights;
  stream: BatchStreamState;
}

/** One local training step on this site's data: the same computation in-process or inside a placed job. */
export function fitStep(cfg: Pick<SiteConfig, 'datasets' | 'configDir'>, i: FitStepInput): FitStepOutput {
  const task = i.task;
  const fc = task.fit!;
  const data = loadSiteDataset(cfg as SiteConfig, task);
  const model = createModel(task.model);
  const saved = i.stream;
  const stream = saved && saved.batchSize === fc.batchSize && saved.n === data.train.n ? BatchStream.restore(saved)
    : BatchStream.create(data.train.n, fc.batchSize, deriveSeed(task.seed, 'stream', i.siteName));
  const out = fit({ model, weights: i.global, data: data.train, config: fc, stream, ...(i.clientState ? { clientState: i.clientState } : {}), rng: createRng(task.seed, 'dropout', i.siteName, task.round) });
  return { weights: out.weights, numExamples: out.numExamples, loss: out.loss, ...(out.clientState ? { clientState: out.clientState } : {}), stream: stream.state() };
}

const MAIN_JS = resolve(dirname(fileURLToPath(import.meta.url)), '../cli/main.js');

/** `setu site run-task --workdir DIR`: what a placed job runs. Reads task.json and weights, writes output and result.json. */
export async function runTaskCommand(workdir: string): Promise<number> {
  const spec = JSON.parse(await readFile(join(workdir, 'task.json'), 'utf8')) as {
    task: TaskMessage; siteName: string; configDir: string; datasets: SiteConfig['datasets']; stream?: BatchStreamState; clientState?: boolean;
  };
  const global = decodeSafetensors(new Uint8Array(await readFile(join(workdir, 'weights.safetensors')))).weights;
  const clientState = spec.clientState ? decodeSafetensors(new Uint8Array(await readFile(join(workdir, 'client-state.safetensors')))).weights : undefined;
  const out = fitStep({ datasets: spec.datasets, configDir: spec.configDir }, { task: spec.task, siteName: spec.siteName, global, stream: spec.stream, clientState });
  await writeFile(join(workdir, 'output.safetensors'), encodeSafetensors(out.weights));
  if (out.clientState) await writeFile(join(workdir, 'client-state-out.safetensors'), encodeSafetensors(out.clientState));
  await writeFile(join(workdir, 'result.json'), JSON.stringify({ numExamples: out.numExamples, loss: out.loss, stream: out.stream, clientState: !!out.clientState }));
  process.stdout.write(`task ${spec.task.taskId}: trained on ${out.numExamples} examples, loss ${out.loss.toFixed(4)}\n`);
  return 0;
}

export interface UsageReport {
  resourceId: string;
  scheduler: 'local' | 'slurm' | 'kubernetes' | 'in-process';
  cpuSeconds: number;
  gpuSeconds: number;
  wallSeconds: number;
  cpuBasis: 'measured' | 'allocated';
  jobId?: string;
}

export interface PlacedRun {
  out: FitStepOutput;
  usage: UsageReport;
  result: JobResult;
}

/**
 * Runs a fit task as a job on the placed resource and collects it. `report` tells the coordinator the job id
 * once the scheduler accepted it. The output is validated (same layout as the global model, finite) before it
 * is trusted; anything else is an error naming the job.
 */
export async function runPlacedFit(cfg: SiteConfig, resource: ComputeResource, i: FitStepInput & { cpus?: number; gpus?: number; gpuType?: string; ramGiB?: number },
  report: (jobId: string, state: string) => Promise<void>, log: (m: string) => void): Promise<PlacedRun> {
  const workdir = join(cfg.stateDirAbs, 'jobs', i.task.taskId.replace(/[^A-Za-z0-9._-]/g, '_'));
  await rm(workdir, { recursive: true, force: true });
  await mkdir(workdir, { recursive: true });
  await writeFile(join(workdir, 'weights.safetensors'), encodeSafetensors(i.global));
  if (i.clientState) await writeFile(join(workdir, 'client-state.safetensors'), encodeSafetensors(i.clientState));
  await writeFile(join(workdir, 'task.json'), JSON.stringify({ task: i.task, siteName: i.siteName, configDir: cfg.configDir, datasets: { [i.task.dataset]: cfg.datasets[i.task.dataset] }, ...(i.stream ? { stream: i.stream } : {}), clientState: !!i.clientState }));
  const executor = executorFor(resource, { slurm: { pollMs: 250 } });
  const job = {
    argv: [process.execPath, MAIN_JS, 'site', 'run-task', '--workdir', workdir], workdir, cpus: i.cpus ?? 1, gpus: i.gpus ?? 0, ...(i.gpuType ? { gpuType: i.gpuType } : {}),
    memoryMiB: Math.max(256, Math.round((i.ramGiB ?? 1) * 1024)), timeLimitSeconds: Math.max(60, Math.ceil((i.task.deadlineAt - Date.now()) / 1000)),
    studyId: i.task.studyId, taskId: i.task.taskId, siteId: i.siteName, dataJurisdiction: resource.jurisdiction,
  };
  const handle = await executor.submit(job);
  log(`task ${i.task.taskId}: submitted to ${resource.id} (${resource.scheduler}) as job ${handle.id}`);
  await report(handle.id, 'submitted');
  await executor.wait(handle, { pollMs: 250 });
  const result = await executor.collect(handle);
  if (result.status.state !== 'completed' || result.exitCode !== 0) {
    // The coordinator's queue view must not show a dead job as still running.
    await report(handle.id, result.status.state === 'completed' ? 'failed' : result.status.state).catch(() => {});
    throw new Error(`job ${handle.id} on ${resource.id} ended ${result.status.state} (${result.status.detail ?? ''}, exit ${result.exitCode}): ${result.stderrTail.slice(-2000)}`);
  }
  const res = JSON.parse(await readFile(join(workdir, 'result.json'), 'utf8')) as { numExamples: number; loss: number; stream: BatchStreamState; clientState: boolean };
  const weights = decodeSafetensors(new Uint8Array(await readFile(join(workdir, 'output.safetensors')))).weights;
  const bad = layoutMismatch(weights, layoutOf(i.global)) ?? firstNonFinite(weights);
  if (bad) throw new Error(`job ${handle.id} on ${resource.id} wrote an unusable model: ${bad}`);
  if (!Number.isInteger(res.numExamples) || res.numExamples < 1 || !Number.isFinite(res.loss)) throw new Error(`job ${handle.id} wrote an invalid result.json`);
  const clientState = res.clientState ? decodeSafetensors(new Uint8Array(await readFile(join(workdir, 'client-state-out.safetensors')))).weights : undefined;
  await rm(workdir, { recursive: true, force: true });
  return {
    out: { weights, numExamples: res.numExamples, loss: res.loss, stream: res.stream, ...(clientState ? { clientState } : {}) },
    usage: { resourceId: resource.id, scheduler: resource.scheduler, cpuSeconds: result.usage.cpuSeconds, gpuSeconds: result.usage.gpuSeconds, wallSeconds: result.usage.wallSeconds, cpuBasis: result.usage.cpuBasis, jobId: handle.id },
    result,
  };
}

/** CPU time of this process between two readings, for training done in-process on the site's own machine. */
export function inProcessUsage(siteName: string, cpu0: NodeJS.CpuUsage, wall0: number): UsageReport {
  const d = process.cpuUsage(cpu0);
  return { resourceId: `site:${siteName}`, scheduler: 'in-process', cpuSeconds: (d.user + d.system) / 1e6, gpuSeconds: 0, wallSeconds: (Date.now() - wall0) / 1000, cpuBasis: 'measured' };
}

