// An external trainer run as a placed job: on the local executor, and on the REAL single-node Slurm of
// .ci/setup-slurm.sh with a GRES request (its device-less `testslot` stands in for GPUs: the machine has none).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseSiteConfig } from './config.js';
import { placedTrainer } from './placed-trainer.js';
import { ExternalTrainerError, declaredGpuSeconds, externalTrainerOf } from './trainers/external.js';
import type { TrainerProgress } from './trainers/trainer.js';
import type { TaskMessage } from '../protocol/api.js';
import { mapWeights, tensor } from '../protocol/tensors.js';
import type { ComputeResource } from '../compute/types.js';
import { slurmAvailable } from '../compute/executors/slurm.js';
import { runCommand } from '../compute/executors/executor.js';

const ci = !!process.env.CI && process.env.CI !== 'false';

/**
 * A contract-v2 trainer in plain Node: adds 1 to every weight, reports what it was told about GPUs (SETU_GPUS,
 * CUDA_VISIBLE_DEVICES) as metrics-free progress, and runs at least `minMs` so whole-second accounting sees it.
 */
const TRAINER = `
const fs = require('node:fs'), path = require('node:path');
const dir = process.env.SETU_WORKDIR;
const task = JSON.parse(fs.readFileSync(path.join(dir, 'task.json'), 'utf8'));
const buf = fs.readFileSync(task.paths.weights);
const n = Number(buf.readBigUInt64LE(0));
const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
const out = Buffer.from(buf);
for (const [k, v] of Object.entries(header)) {
  if (k === '__metadata__') continue;
  for (let o = 8 + n + v.data_offsets[0]; o < 8 + n + v.data_offsets[1]; o += 4) out.writeFloatLE(out.readFloatLE(o) + 1, o);
}
console.log('setu:progress ' + JSON.stringify({ step: 1, of: 1, message: 'gpus=' + process.env.SETU_GPUS + ' cvd=[' + (process.env.CUDA_VISIBLE_DEVICES ?? 'unset') + ']' }));
const until = Date.now() + Number(process.argv[2] || 0);
while (Date.now() < until);
fs.writeFileSync(task.paths.output, out);
fs.writeFileSync(task.paths.result, JSON.stringify({ fit: { numExamples: 12, metrics: { loss: 0.5 } }, ...(process.argv[3] ? { device: JSON.parse(process.argv[3]) } : {}) }));
`;

function setup(compute: string, minMs = 0, device?: object) {
  const dir = mkdtempSync(join(tmpdir(), 'setu-placed-trainer-'));
  writeFileSync(join(dir, 'train.cjs'), TRAINER);
  writeFileSync(join(dir, 'data.csv'), 'x\n1\n');
  const cmd = JSON.stringify([process.execPath, './train.cjs', String(minMs), ...(device ? [JSON.stringify(device)] : [])]);
  const cfg = parseSiteConfig(`coordinator: http://127.0.0.1:1\nstateDir: state\njurisdiction: IN\ncompute: ${compute}\n` +
    `trainer: { kind: external, command: ${cmd} }\ndatasets: { cxr: { format: csv, path: data.csv } }\n`, join(dir, 'site.yaml'));
  const task = {
    taskId: 'cxr.r1.aiims', studyId: 'cxr', round: 1, kind: 'fit', modelVersionId: 'cxr.v0', dataset: 'cxr', model: { kind: 'external', name: 'resnet' },
    fit: { epochs: 1, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.01 } }, strategy: 'FedAvg', seed: 3, deadlineAt: Date.now() + 300_000,
  } as unknown as TaskMessage;
  const global = mapWeights(['conv.weight', 'fc.bias'], (k) => tensor(k === 'fc.bias' ? [2] : [2, 2], new Float32Array(k === 'fc.bias' ? [0.5, -1] : [1, 2, 3, 4])));
  return { dir, cfg, task, global };
}

const resource = (o: Partial<ComputeResource>): ComputeResource => ({ id: 'in-pool', name: 'pool', institution: 'cdac', jurisdiction: 'IN', scheduler: 'local', capacity: { cpus: 2, gpus: [], ramGiB: 1 }, ...o });

test('site.yaml may now combine placed compute with an external trainer', () => {
  const { cfg } = setup('{ mode: placed, cpus: 1 }');
  assert.equal(cfg.compute?.mode, 'placed');
  assert.equal(cfg.trainer?.kind, 'external');
});

test('an external trainer placed on a local resource runs as a job: same contract, validated output, the job\'s usage', { timeout: 60_000 }, async () => {
  const { cfg, task, global } = setup('{ mode: placed, cpus: 1 }');
  const jobs: string[] = [];
  const placed = await placedTrainer(cfg, resource({}), task, 'aiims', async (id, state) => void jobs.push(`${id}:${state}`), () => {});
  const seen: TrainerProgress[] = [];
  const out = await externalTrainerOf(cfg, placed).fit({ task, global, siteName: 'aiims', progress: (p) => seen.push(p) });
  assert.deepEqual([...out.weights['conv.weight']!.data], [2, 3, 4, 5]);
  assert.deepEqual([...out.weights['fc.bias']!.data], [1.5, 0]);
  assert.equal(out.numExamples, 12);
  assert.match(jobs[0]!, /^local-\d+-\d+:submitted$/);
  assert.equal(jobs.length, 1);
  // A job given no GPU is told so and sees none; progress comes from the job's output once it has ended.
  assert.deepEqual(seen, [{ step: 1, of: 1, message: 'gpus=0 cvd=[]' }]);
  const u = placed.usage()!;
  assert.deepEqual([u.resourceId, u.scheduler, u.cpuBasis, u.gpuSeconds], ['in-pool', 'local', 'measured', 0]);
  assert.ok(u.cpuSeconds > 0 && u.jobId!.startsWith('local-'));
});

test('a placed trainer that fails is the trainer\'s error with its stderr, and its job is reported failed', { timeout: 60_000 }, async () => {
  const { cfg, task, global, dir } = setup('{ mode: placed }');
  writeFileSync(join(dir, 'train.cjs'), 'console.error("CUDA out of memory"); process.exit(3)');
  const jobs: string[] = [];
  const placed = await placedTrainer(cfg, resource({}), task, 'aiims', async (id, state) => void jobs.push(state), () => {});
  await assert.rejects(externalTrainerOf(cfg, placed).fit({ task, global, siteName: 'aiims' }),
    (e: unknown) => e instanceof ExternalTrainerError && e.kind === 'exit' && /exited with status 3/.test(e.message) && /CUDA out of memory/.test(e.message));
  assert.deepEqual(jobs, ['submitted', 'failed']);
});

test('on the real Slurm: the placed trainer\'s job asks --gres for the site\'s GPUs and is charged GPU-seconds from sacct', { timeout: 120_000 }, async (t) => {
  const a = await slurmAvailable();
  const gres = a.ok ? (await runCommand('sinfo', ['-h', '-o', '%G'])).stdout : '';
  if (!/(^|,)testslot:\d/m.test(gres)) {
    const why = a.ok ? "the cluster has no 'testslot' GRES" : `Slurm not available (${a.detail})`;
    if (ci) throw new Error(`CI: ${why}; .ci/run must run .ci/setup-slurm.sh`);
    return t.skip(`${why}; run 'sudo bash .ci/setup-slurm.sh'`);
  }
  // The resource hands out its "GPUs" under the device-less test GRES: the request and the accounting are real,
  // the device is not (no GPU here), so CUDA_VISIBLE_DEVICES stays unset and the trainer would run on the CPU.
  const { cfg, task, global } = setup('{ mode: placed, cpus: 1, gpus: 1, ramGiB: 0.25 }', 1500);
  const r = resource({ id: 'in-slurm', scheduler: 'slurm', capacity: { cpus: 2, gpus: [{ model: 'test slot (not a GPU)', memoryGiB: 1, count: 2 }], ramGiB: 8 }, schedulerConfig: { gpuGres: 'testslot' } });
  const jobs: string[] = [];
  const placed = await placedTrainer(cfg, r, task, 'aiims', async (id, state) => void jobs.push(`${id}:${state}`), () => {});
  const seen: TrainerProgress[] = [];
  const out = await externalTrainerOf(cfg, placed).fit({ task, global, siteName: 'aiims', progress: (p) => seen.push(p) });
  assert.deepEqual([...out.weights['fc.bias']!.data], [1.5, 0]);
  const id = jobs[0]!.split(':')[0]!;
  assert.match(jobs[0]!, /^\d+:submitted$/);
  assert.deepEqual(seen, [{ step: 1, of: 1, message: 'gpus=1 cvd=[unset]' }]);
  const acct = await runCommand('sacct', ['-j', id, '-X', '-n', '-P', '--format=AllocTRES,ReqTRES']);
  assert.match(acct.stdout, /gres\/testslot=1/);
  const u = placed.usage()!;
  assert.deepEqual([u.scheduler, u.jobId, u.cpuBasis], ['slurm', id, 'measured']);
  assert.ok(u.wallSeconds >= 1, JSON.stringify(u));
  assert.equal(u.gpuSeconds, u.wallSeconds);
  // The task's work directory (inputs, batch script, job output) is removed after the task.
  assert.deepEqual(readdirSync(join(cfg.stateDirAbs, 'jobs')), []);
});

test('on the site\'s own machine, GPU-seconds are the devices the trainer declares × its run time', { timeout: 60_000 }, async () => {
  const cuda = setup('{ mode: own }', 300, { type: 'cuda', count: 2, names: ['NVIDIA H200', 'NVIDIA H200'] });
  const out = await externalTrainerOf(cuda.cfg).fit({ task: cuda.task, global: cuda.global, siteName: 'aiims' });
  assert.ok(out.gpuSeconds! >= 0.6 && out.gpuSeconds! < 30, String(out.gpuSeconds));
  const cpu = setup('{ mode: own }', 0, { type: 'cpu', count: 0 });
  assert.equal((await externalTrainerOf(cpu.cfg).fit({ task: cpu.task, global: cpu.global, siteName: 'aiims' })).gpuSeconds, 0);
  assert.equal(declaredGpuSeconds(undefined, 5000), 0);
  assert.equal(declaredGpuSeconds({ type: 'cuda', count: 1 }, 2500), 2.5);
  for (const [device, re] of [[{ type: 'cuda', count: -1 }, /device\.count must be an integer from 0 to 1024/], [{ type: 'CUDA!', count: 1 }, /device\.type must be a lower-case device kind/],
    [{ type: 'cuda', count: 1, watts: 300 }, /device: unexpected field "watts" \(allowed: type, count, names\)/]] as const) {
    const bad = setup('{ mode: own }', 0, device);
    await assert.rejects(externalTrainerOf(bad.cfg).fit({ task: bad.task, global: bad.global, siteName: 'aiims' }), (e: unknown) => e instanceof ExternalTrainerError && e.kind === 'output' && re.test(e.message));
  }
});
