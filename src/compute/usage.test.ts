import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { executorFor, LocalExecutor, SlurmExecutor, KubernetesExecutor } from './executors/index.js';
import { placeAndRun, runToCompletion, usageRecord } from './usage.js';
import { probeSlurmCapacity } from './executors/slurm-capacity.js';
import { slurmAvailable } from './executors/slurm.js';
import { summarize } from './ledger.js';
import { place } from './placement.js';
import { resources } from './fixtures.js';
import type { ComputeResource } from './types.js';

test('executorFor picks the executor of the resource scheduler', () => {
  assert.ok(executorFor(resources.find((r) => r.scheduler === 'local')!) instanceof LocalExecutor);
  assert.ok(executorFor(resources.find((r) => r.scheduler === 'slurm')!) instanceof SlurmExecutor);
  assert.ok(executorFor(resources.find((r) => r.scheduler === 'kubernetes')!) instanceof KubernetesExecutor);
  const noCtx: ComputeResource = { ...resources[1]!, schedulerConfig: { image: 'x' } };
  assert.throws(() => executorFor(noCtx), /needs a kube context/);
});

test('placement, a real local run and the ledger fit together', async () => {
  const home: ComputeResource = { id: 'jp-kyoto-ws', name: 'Kyoto workstation', institution: 'kyoto-u',
    jurisdiction: 'JP', scheduler: 'local', capacity: { cpus: 2, gpus: [], ramGiB: 4 } };
  const p = place({ siteId: 'kyoto-h', dataJurisdiction: 'JP', cpus: 1, gpus: 0, ramGiB: 1 }, [...resources, home]);
  assert.ok(p.ok);
  assert.equal(p.resource.jurisdiction, 'JP');
  const job = { argv: [process.execPath, '-e', 'let x = 0; while (process.cpuUsage().user < 300000) for (let i = 0; i < 1e6; i++) x += i'],
    workdir: await mkdtemp(join(tmpdir(), 'setu-usage-')), cpus: 1, gpus: 0, memoryMiB: 64, timeLimitSeconds: 30,
    studyId: 'heart', taskId: 'r1-kyoto', siteId: 'kyoto-h', dataJurisdiction: 'JP' };
  const seen: string[] = [];
  const { result } = await runToCompletion(executorFor(home), job, (s) => seen.push(s.state));
  assert.equal(result.exitCode, 0);
  assert.equal(seen.at(-1), 'completed');
  const rec = usageRecord(job, home, { institution: 'kyoto-u-hospital', country: 'JP' }, result);
  assert.deepEqual([rec.institution, rec.country, rec.siteInstitution, rec.siteCountry],
    ['kyoto-u', 'JP', 'kyoto-u-hospital', 'JP']);
  assert.ok(rec.cpuSeconds >= 0.29, `cpu ${rec.cpuSeconds}`);
  const s = summarize([rec]);
  assert.equal(s.byCountry.find((c) => c.key === 'JP')!.contributed.cpuSeconds, rec.cpuSeconds);
});

test('placeAndRun: an Indian site trains on Indian Slurm for real; a Japanese site is refused Indian compute', async (t) => {
  const a = await slurmAvailable();
  if (!a.ok) {
    if (process.env.CI && process.env.CI !== 'false') assert.fail(`CI: Slurm is required and not available: ${a.detail}`);
    return t.skip(`Slurm not available (${a.detail})`);
  }
  // The real cluster stands in for an Indian HPC centre; its free capacity comes from scontrol.
  const hpc: ComputeResource = { id: 'in-hpc', name: 'single-node Slurm', institution: 'cdac', jurisdiction: 'IN',
    scheduler: 'slurm', capacity: { cpus: 2, gpus: [], ramGiB: 8 }, availability: { now: await probeSlurmCapacity() } };
  hpc.availability!.now = { ...hpc.availability!.now!, cpus: Math.max(1, hpc.availability!.now!.cpus),
    ramGiB: Math.min(8, hpc.availability!.now!.ramGiB) }; // concurrent tests may hold the CPUs: the job then queues
  const job = { argv: ['/bin/sh', '-c', 'echo trained on $(hostname)'],
    workdir: await mkdtemp(join(tmpdir(), 'setu-par-')), cpus: 1, gpus: 0, memoryMiB: 100, timeLimitSeconds: 60,
    studyId: 'heart', taskId: 'r1-aiims', siteId: 'aiims', dataJurisdiction: 'IN' };
  const placed: string[] = [];
  const r = await placeAndRun(job, [hpc, ...resources.filter((x) => x.jurisdiction === 'JP')],
    { institution: 'aiims', country: 'IN' }, { onPlaced: (res) => placed.push(res.id), executors: { slurm: { pollMs: 200 } } });
  assert.ok(r.ok, r.ok ? '' : r.reason);
  assert.deepEqual(placed, ['in-hpc']);
  assert.equal(r.handle.kind, 'slurm');
  assert.match(r.result.stdoutTail, /^trained on /);
  assert.deepEqual([r.record.country, r.record.siteCountry, r.record.resourceId], ['IN', 'IN', 'in-hpc']);

  const jp = await placeAndRun({ ...job, siteId: 'kyoto-h', dataJurisdiction: 'JP' }, [hpc],
    { institution: 'kyoto-u', country: 'JP' });
  assert.ok(!jp.ok);
  assert.match(jp.reason, /no compute resource is registered in JP/);
  assert.match(jp.rejected[0]!.reason, /data is in JP and resource in-hpc is in IN/);
});
