import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { executorFor, LocalExecutor, SlurmExecutor, KubernetesExecutor } from './executors/index.js';
import { runToCompletion, usageRecord } from './usage.js';
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
  const job = { argv: [process.execPath, '-e', 'while (process.cpuUsage().user < 300000) {}'],
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
