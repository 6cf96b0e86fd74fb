// `setu compute …` subcommands that need no coordinator: prove a Slurm cluster works, validate and list resource
// files, try a placement, render a usage ledger from records, print a Kubernetes Job manifest.
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import YAML from 'yaml';
import { parse, UsageError } from './args.js';
import { slurmNodes } from '../compute/executors/slurm-capacity.js';
import {
  buildJobManifest, contributionReport, ComputeValidationError, parseResource, parseTrainingJob, place,
  renderContribution, renderSummary, renderTable, runToCompletion, slurmAvailable, SlurmExecutor, slurmQueue, summarize,
  type ComputeResource, type TrainingJob, type UsageRecord,
} from '../compute/index.js';

export interface Io { out: (s: string) => void; err: (s: string) => void }
const stdio: Io = { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) };

const HELP = `setu compute: compute federation tools that need no coordinator

  setu compute slurm-check [--partition P] [--account A] [--workdir DIR] [--json]
      submit a tiny job with sbatch, follow it with squeue/sacct and print its accounting
  setu compute queue [--all] [--json]
      Setu's jobs in the local Slurm queue (--all: every job)
  setu compute resources --file resources.yaml [--json]
      validate a resource registration file (YAML or JSON list, or {resources: [...]}) and list it
  setu compute place --file resources.yaml --site S --jurisdiction IN [--cpus N] [--gpus N] [--ram GiB]
                     [--gpu-mem GiB] [--gpu-type TYPE] [--allowed IN,JP] [--json]
      where a site's training would run, or why it cannot
  setu compute ledger --file usage.json [--json]
      contribution report (compute contributed against consumed, IN against JP) from usage records
  setu compute kubernetes-manifest --file job.yaml --image IMAGE [--namespace NS] [--claim PVC]
      the Kubernetes Job a training job becomes
`;

async function readStructured(file: string): Promise<unknown> {
  const text = await readFile(file, 'utf8').catch((e: Error) => { throw new UsageError(`cannot read ${file}: ${e.message}`); });
  try {
    return YAML.parse(text); // YAML is a superset of JSON
  } catch (e) {
    throw new UsageError(`${file} is neither YAML nor JSON: ${(e as Error).message}`);
  }
}

function validated<T>(what: () => T, file: string): T {
  try {
    return what();
  } catch (e) {
    if (e instanceof ComputeValidationError) throw new UsageError(`${file}: ${e.message}`);
    throw e;
  }
}

async function loadResources(file: string | undefined): Promise<ComputeResource[]> {
  if (!file) throw new UsageError('--file is required');
  const doc = await readStructured(file);
  const list = Array.isArray(doc) ? doc : (doc as { resources?: unknown })?.resources;
  if (!Array.isArray(list)) throw new UsageError(`${file}: expected a list of resources or {resources: [...]}`);
  const rs = list.map((r, i) => validated(() => parseResource(r), `${file} resource #${i + 1}`));
  const dup = rs.map((r) => r.id).find((id, i, a) => a.indexOf(id) !== i);
  if (dup) throw new UsageError(`${file}: resource id '${dup}' appears twice`);
  return rs;
}

function posNumber(v: string | undefined, name: string, dflt: number, integer = true): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0 || (integer && !Number.isInteger(n))) {
    throw new UsageError(`--${name} must be a non-negative ${integer ? 'integer' : 'number'}, got "${v}"`);
  }
  return n;
}

export async function slurmCheck(argv: string[], io: Io = stdio): Promise<number> {
  const { values: v } = parse(argv, { partition: { type: 'string' }, account: { type: 'string' },
    workdir: { type: 'string' }, json: { type: 'boolean' } });
  const avail = await slurmAvailable();
  if (!avail.ok) {
    io.err(`setu: no Slurm cluster answers here: ${avail.detail}\n(bring one up with: sudo bash .ci/setup-slurm.sh)\n`);
    return 1;
  }
  // On a multi-node cluster the workdir must be on a shared filesystem: pass --workdir then.
  const base = v.workdir ? resolve(v.workdir) : tmpdir();
  await mkdir(base, { recursive: true });
  const workdir = await mkdtemp(join(base, 'setu-slurm-check-'));
  const job: TrainingJob = {
    argv: ['/bin/sh', '-c', 'echo "setu slurm-check on $(hostname)"; i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done'],
    workdir, cpus: 1, gpus: 0, memoryMiB: 100, timeLimitSeconds: 120, studyId: 'slurm-check', taskId: 'slurm-check',
    siteId: 'local', dataJurisdiction: 'ZZ',
  };
  const ex = new SlurmExecutor({ partition: v.partition, account: v.account, pollMs: 250 });
  let last = '';
  const { handle, result } = await runToCompletion(ex, job, (s, t) => {
    if (s.detail !== last && !v.json) io.err(`  ${s.detail ?? s.state} after ${t.toFixed(1)} s\n`);
    last = s.detail ?? s.state;
  });
  const ok = result.status.state === 'completed' && result.exitCode === 0;
  // What a resource registration needs from the cluster: each node's GRES (capacity.gpus[].gresType).
  const gres = (await slurmNodes()).map((n) => ({ node: n.name, gres: n.gres }));
  const gpuTypes = gres.flatMap((n) => n.gres.filter((g) => g.name === 'gpu').map((g) => `${g.type ?? '(untyped)'} ×${g.count} on ${n.node}`));
  if (v.json) {
    io.out(JSON.stringify({ ok, jobId: handle.id, nodes: avail.detail.split('\n'), gres, state: result.status.detail,
      exitCode: result.exitCode, usage: result.usage, stdout: result.stdoutTail, stderr: result.stderrTail }, null, 2) + '\n');
  } else {
    io.out(`Slurm nodes: ${avail.detail.split('\n').join(', ')}\n` +
      `GRES: ${gres.map((n) => `${n.node}: ${n.gres.map((g) => [g.name, g.type, g.count].filter((x) => x !== undefined).join(':')).join(',') || 'none'}`).join('; ')}\n` +
      `GPUs (capacity.gpus[].gresType in resources.yaml): ${gpuTypes.join(', ') || 'none'}\n` + renderTable(['field', 'value'], [
      ['job id', handle.id], ['state (sacct)', result.status.detail ?? result.status.state],
      ['exit code', String(result.exitCode)], ['wall seconds', String(result.usage.wallSeconds)],
      ['CPU seconds (TotalCPU)', result.usage.cpuSeconds.toFixed(3)], ['GPU seconds', String(result.usage.gpuSeconds)],
      ['stdout', result.stdoutTail.trim()],
    ].map(([a, b]) => [a!, b!]), ['l', 'l']) + `\n${ok ? 'OK: Slurm runs and accounts jobs' : 'FAILED'}\n`);
  }
  if (ok) await rm(workdir, { recursive: true, force: true });
  else io.err(`job files kept in ${workdir}\n`);
  return ok ? 0 : 1;
}

async function queueCmd(argv: string[], io: Io): Promise<number> {
  const { values: v } = parse(argv, { all: { type: 'boolean' }, json: { type: 'boolean' } });
  const q = await slurmQueue(undefined, v.all ?? false);
  if (v.json) { io.out(JSON.stringify(q, null, 2) + '\n'); return 0; }
  io.out(q.length === 0 ? 'no Setu jobs in the Slurm queue\n' : renderTable(
    ['job', 'name', 'state', 'elapsed', 'limit', 'CPUs', 'GPUs', 'node/reason'],
    q.map((e) => [e.id, e.name, e.state, e.elapsed, e.timeLimit, String(e.cpus), e.gres || '-', e.where]),
    ['l', 'l', 'l', 'r', 'r', 'r', 'l', 'l']) + '\n');
  return 0;
}

async function resourcesCmd(argv: string[], io: Io): Promise<number> {
  const { values: v } = parse(argv, { file: { type: 'string' }, json: { type: 'boolean' } });
  const rs = await loadResources(v.file);
  if (v.json) { io.out(JSON.stringify(rs, null, 2) + '\n'); return 0; }
  io.out(renderTable(['id', 'institution', 'country', 'scheduler', 'CPUs', 'GPUs', 'RAM GiB', 'free now'],
    rs.map((r) => [r.id, r.institution, r.jurisdiction, r.scheduler, String(r.capacity.cpus),
      r.capacity.gpus.map((g) => `${g.count}×${g.model} ${g.memoryGiB}G`).join(', ') || '-', String(r.capacity.ramGiB),
      r.availability?.now ? `${r.availability.now.cpus} CPU, ${r.availability.now.gpus} GPU`
        : r.availability?.windows ? `${r.availability.windows.length} window(s)` : 'all']), ['l', 'l', 'l', 'l', 'r', 'l', 'r', 'l']) + '\n');
  return 0;
}

async function placeCmd(argv: string[], io: Io): Promise<number> {
  const { values: v } = parse(argv, { file: { type: 'string' }, site: { type: 'string' },
    jurisdiction: { type: 'string' }, cpus: { type: 'string' }, gpus: { type: 'string' }, ram: { type: 'string' },
    'gpu-mem': { type: 'string' }, 'gpu-type': { type: 'string' }, allowed: { type: 'string' }, json: { type: 'boolean' } });
  if (!v.site || !v.jurisdiction) throw new UsageError('--site and --jurisdiction are required');
  if (!/^[A-Z]{2}$/.test(v.jurisdiction)) throw new UsageError(`--jurisdiction must be an ISO country code like IN, got "${v.jurisdiction}"`);
  const rs = await loadResources(v.file);
  const r = place({
    siteId: v.site, dataJurisdiction: v.jurisdiction, cpus: posNumber(v.cpus, 'cpus', 1),
    gpus: posNumber(v.gpus, 'gpus', 0), ramGiB: posNumber(v.ram, 'ram', 1, false),
    ...(v['gpu-mem'] !== undefined ? { minGpuMemoryGiB: posNumber(v['gpu-mem'], 'gpu-mem', 0, false) } : {}),
    ...(v['gpu-type'] !== undefined ? { gpuType: v['gpu-type'] } : {}),
    ...(v.allowed !== undefined ? { allowedJurisdictions: v.allowed.split(',').map((s) => s.trim()).filter(Boolean) } : {}),
  }, rs);
  if (v.json) {
    io.out(JSON.stringify(r.ok ? { ok: true, resourceId: r.resource.id, reason: r.reason, rejected: r.rejected }
      : r, null, 2) + '\n');
  } else {
    io.out(`${r.reason}\n`);
    if (r.rejected.length) io.out(r.rejected.map((x) => `  not ${x.resourceId}: ${x.reason}`).join('\n') + '\n');
  }
  return r.ok ? 0 : 1;
}

function checkRecords(doc: unknown, file: string): UsageRecord[] {
  const list = Array.isArray(doc) ? doc : (doc as { records?: unknown })?.records;
  if (!Array.isArray(list)) throw new UsageError(`${file}: expected a list of usage records or {records: [...]}`);
  const str = ['taskId', 'studyId', 'siteId', 'siteInstitution', 'siteCountry', 'resourceId', 'institution', 'country'];
  const num = ['cpuSeconds', 'gpuSeconds', 'wallSeconds'];
  list.forEach((r: Record<string, unknown>, i) => {
    const bad = [...str.filter((k) => typeof r?.[k] !== 'string'), ...num.filter((k) => typeof r?.[k] !== 'number')];
    if (bad.length) throw new UsageError(`${file} record #${i + 1}: missing or mistyped ${bad.join(', ')}`);
  });
  return list as UsageRecord[];
}

async function ledgerCmd(argv: string[], io: Io): Promise<number> {
  const { values: v } = parse(argv, { file: { type: 'string' }, json: { type: 'boolean' } });
  if (!v.file) throw new UsageError('--file is required (the coordinator\'s ledger is `setu compute ledger` with a coordinator)');
  const records = checkRecords(await readStructured(v.file), v.file);
  let summary, report;
  try {
    summary = summarize(records);
    report = contributionReport(records);
  } catch (e) {
    if (e instanceof RangeError) throw new UsageError(`${v.file}: ${e.message}`);
    throw e;
  }
  if (v.json) io.out(JSON.stringify({ summary, contribution: report }, null, 2) + '\n');
  else io.out(`${renderContribution(report)}\n\n${renderSummary(summary)}\n`);
  return 0;
}

async function manifestCmd(argv: string[], io: Io): Promise<number> {
  const { values: v } = parse(argv, { file: { type: 'string' }, image: { type: 'string' },
    namespace: { type: 'string' }, claim: { type: 'string' }, json: { type: 'boolean' } });
  if (!v.file || !v.image) throw new UsageError('--file and --image are required');
  const file = v.file;
  const doc = await readStructured(file);
  const job = validated(() => parseTrainingJob(doc), file);
  const m = buildJobManifest(job, { image: v.image, namespace: v.namespace, workdirClaim: v.claim });
  io.out(v.json ? JSON.stringify(m, null, 2) + '\n' : YAML.stringify(m));
  return 0;
}

export async function main(argv: string[], io: Io = stdio): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case undefined: case 'help': case '--help': case '-h': io.out(HELP); return 0;
    case 'slurm-check': return slurmCheck(rest, io);
    case 'queue': return queueCmd(rest, io);
    case 'resources': return resourcesCmd(rest, io);
    case 'place': return placeCmd(rest, io);
    case 'ledger': return ledgerCmd(rest, io);
    case 'kubernetes-manifest': return manifestCmd(rest, io);
    default: throw new UsageError(`unknown compute subcommand "${sub}"; run setu compute --help`);
  }
}
