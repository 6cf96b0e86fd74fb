/**
 * A site without compute of its own trains a custom model with its own program on shared compute: a real coordinator,
 * a real site agent process (`compute: {mode: placed, gpus: 1}`, an external trainer), a Slurm resource registered in
 * the site's jurisdiction, the REAL single-node Slurm of .ci/setup-slurm.sh. The job is submitted with --gres, the
 * round commits a new global model version, and the ledger records the task's GPU-seconds from sacct. The machine has no GPU: the resource's
 * GPUs are allocated under the cluster's device-less `testslot` GRES (schedulerConfig.gpuGres), so the request and
 * the accounting are Slurm's own and no GPU is pretended to exist (no CUDA_VISIBLE_DEVICES is set).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import YAML from 'yaml';
import { startCoordinator, type RunningCoordinator } from '../coordinator/start.js';
import { encodeSafetensors } from '../protocol/safetensors.js';
import { mapWeights, tensor } from '../protocol/tensors.js';
import { SETU_MAIN, adminOf, runSetu, stopAll, studyLeadClient, waitFor } from '../testing/processes.js';
import { slurmAvailable } from '../compute/executors/slurm.js';
import { generateSigningKeys } from '../protocol/signing.js';
import { HttpClient } from './http.js';
import { runCommand } from '../compute/executors/executor.js';

const ci = !!process.env.CI && process.env.CI !== 'false';

// Contract v2 in plain Node (the Python SDK has its own tests): every weight + 1, for about 1.5 s of wall time.
const TRAINER = `
const fs = require('node:fs');
const task = JSON.parse(fs.readFileSync(process.env.SETU_TASK, 'utf8'));
const evaluation = { numExamples: 24, metrics: { accuracy: 0.5 } };
if (task.kind === 'evaluate') { fs.writeFileSync(task.paths.result, JSON.stringify({ evaluate: evaluation })); process.exit(0); }
const buf = Buffer.from(fs.readFileSync(task.paths.weights));
const n = Number(buf.readBigUInt64LE(0));
for (const [k, v] of Object.entries(JSON.parse(buf.subarray(8, 8 + n).toString('utf8')))) {
  if (k !== '__metadata__') for (let o = 8 + n + v.data_offsets[0]; o < 8 + n + v.data_offsets[1]; o += 4) buf.writeFloatLE(buf.readFloatLE(o) + 1, o);
}
console.log('setu:progress ' + JSON.stringify({ step: 1, of: 1, message: 'SETU_GPUS=' + process.env.SETU_GPUS }));
const until = Date.now() + 1500; while (Date.now() < until);
fs.writeFileSync(task.paths.output, buf);
fs.writeFileSync(task.paths.result, JSON.stringify({ fit: { numExamples: 24, metrics: { loss: 0.25 } }, evaluate: evaluation }));
`;

test('an external trainer placed on Slurm with --gres trains a round; the ledger counts its GPU-seconds from sacct', { timeout: 180_000 }, async (t) => {
  const a = await slurmAvailable();
  const gres = a.ok ? (await runCommand('sinfo', ['-h', '-o', '%G'])).stdout : '';
  if (!/(^|,)testslot:\d/m.test(gres)) {
    const why = a.ok ? "the cluster has no 'testslot' GRES" : `Slurm not available (${a.detail})`;
    if (ci) throw new Error(`CI: ${why}; .ci/run must run .ci/setup-slurm.sh`);
    return t.skip(`${why}; run 'sudo bash .ci/setup-slurm.sh'`);
  }
  const dir = mkdtempSync(join(tmpdir(), 'setu-placed-gpu-'));
  const children: ChildProcess[] = [];
  let c: RunningCoordinator | undefined;
  try {
    // A coordinator in India: the Indian hospital's updates stay in the country (its policy's default rules).
    process.env.SETU_JURISDICTION = 'IN';
    c = await startCoordinator({ dataDir: join(dir, 'coord'), port: 0, tickMs: 50 });
    delete process.env.SETU_JURISDICTION;
    const admin = adminOf(c);
    await admin.json('POST', '/v1/institutions', { id: 'aiims', name: 'AIIMS Delhi', kind: 'hospital', jurisdiction: 'IN' });
    await admin.json('POST', '/v1/institutions', { id: 'cdac', name: 'C-DAC Pune', kind: 'compute_centre', jurisdiction: 'IN' });
    await admin.json('POST', '/v1/compute/resources', {
      id: 'in-cdac-slurm', name: 'C-DAC cluster', institution: 'cdac', jurisdiction: 'IN', scheduler: 'slurm',
      capacity: { cpus: 2, gpus: [{ model: 'testslot (a device-less test GRES, not a GPU)', memoryGiB: 1, count: 2 }], ramGiB: 4 },
      schedulerConfig: { gpuGres: 'testslot' },
    });
    const site = join(dir, 'aiims');
    mkdirSync(site, { recursive: true });
    writeFileSync(join(site, 'train.cjs'), TRAINER);
    writeFileSync(join(site, 'data.csv'), `x\n${Array.from({ length: 24 }, (_, i) => i).join('\n')}\n`);
    writeFileSync(join(site, 'site.yaml'), YAML.stringify({
      coordinator: c.url, pollWaitMs: 2000, jurisdiction: 'IN', datasets: { d: { format: 'csv', path: 'data.csv' } },
      compute: { mode: 'placed', cpus: 1, gpus: 1, ramGiB: 0.25 },
      trainer: { kind: 'external', command: [process.execPath, './train.cjs'], timeoutSeconds: 120 },
    }));
    const inv = await admin.json<{ token: string }>('POST', '/v1/invites', { siteName: 'aiims', institution: 'aiims', jurisdiction: 'IN', ttlHours: 1 });
    children.push(runSetu(['site', 'start', '--config', join(site, 'site.yaml'), '--token', inv.token], join(site, 'agent.log')));
    await waitFor('the site with its external trainer and placed compute', async () =>
      (await admin.json<{ trainer?: { kind: string } | null }[]>('GET', '/v1/sites')).some((s) => s.trainer?.kind === 'external') ? true : undefined, 60_000);
    const lead = await studyLeadClient(admin, c.url);
    const s = await lead.json<{ id: string }>('POST', '/v1/studies', {
      name: 'cxr on shared GPUs', dataset: 'd', model: { kind: 'custom', name: 'cnn' }, strategy: { name: 'FedAvg' }, rounds: 1,
      fit: { epochs: 1, batchSize: 2, optimizer: { kind: 'sgd', lr: 0.1 } }, roundTimeoutSeconds: 150, sites: ['aiims'], minSites: 1,
    });
    const init = mapWeights(['conv.weight', 'fc.bias'], (k) => tensor([2], new Float32Array(k === 'fc.bias' ? [0.5, -1] : [1, 2])));
    await lead.request('PUT', `/v1/studies/${s.id}/initial-weights`, { type: 'application/octet-stream', data: encodeSafetensors(init) });
    await lead.json('POST', `/v1/studies/${s.id}/propose`, {});
    // The hospital's own site admin approves (the consortium admin may not approve for a site).
    const inv2 = await admin.json<{ token: string; userId: string }>('POST', '/v1/users', { name: 'admin-aiims', role: 'site_admin', institution: 'aiims', ttlHours: 1 });
    const keys = generateSigningKeys();
    await new HttpClient({ baseUrl: c.url, giveUpAfterMs: 10_000 }).json('POST', '/v1/users/enrol', { token: inv2.token, publicKey: keys.publicKeyRaw });
    const siteAdmin = new HttpClient({ baseUrl: c.url, signer: { keyId: inv2.userId, privateKey: keys.privateKey }, giveUpAfterMs: 20_000 });
    await siteAdmin.json('POST', `/v1/studies/${s.id}/approve`, { site: 'aiims', terms: { purpose: 'chest X-ray triage research' } });
    await lead.json('POST', `/v1/studies/${s.id}/start`, {});
    const done = await waitFor('the study to complete', async () => {
      const d = await lead.json<{ status: string; error: string | null }>('GET', `/v1/studies/${s.id}`);
      if (d.status === 'failed') throw new Error(`study failed: ${d.error}`);
      return d.status === 'completed' ? d : undefined;
    }, 150_000, 250);
    assert.equal(done.status, 'completed');
    const versions = await c.store.listModelVersions(s.id);
    assert.deepEqual(versions.map((v) => v.round), [0, 1]);
    // The fit task ran as the Slurm job; the final evaluation runs at the site (evaluation is never placed).
    const usage = await admin.json<{ records: { siteId: string; resourceId: string; scheduler: string; cpuSeconds: number; gpuSeconds: number; wallSeconds: number; jobId: string | null }[] }>('GET', `/v1/compute/usage?study=${s.id}`);
    const u = usage.records.find((r) => r.scheduler === 'slurm')!;
    assert.ok(u, JSON.stringify(usage.records));
    assert.deepEqual([u.resourceId, u.scheduler], ['in-cdac-slurm', 'slurm']);
    assert.match(u.jobId!, /^\d+$/);
    assert.ok(u.wallSeconds >= 1, JSON.stringify(u));
    assert.equal(u.gpuSeconds, u.wallSeconds, '1 allocated × ElapsedRaw');
    // The CLI shows it per task, in seconds (table and CSV).
    // (A child process: the coordinator in this process must keep answering.)
    const cli = (...args: string[]) => runCommand(process.execPath, [SETU_MAIN, 'compute', 'usage', '--study', s.id, '--coordinator', c!.url, '--data-dir', join(dir, 'coord'), ...args], { timeoutMs: 30_000 });
    const text = await cli();
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`in-cdac-slurm\\s+slurm\\s+${u.jobId}\\s+[\\d.]+\\s+measured\\s+${u.gpuSeconds.toFixed(1)}\\s+${u.wallSeconds.toFixed(1)}`));
    const csv = await cli('--csv');
    assert.equal(csv.code, 0, csv.stderr);
    assert.match(csv.stdout, /^study,task,site,resource,scheduler,job,CPU-s,CPU basis,GPU-s,wall-s\n/);
    assert.match(csv.stdout, new RegExp(`,in-cdac-slurm,slurm,${u.jobId},[\\d.]+,measured,${u.gpuSeconds.toFixed(1)},`));
    const acct = await runCommand('sacct', ['-j', u.jobId!, '-X', '-n', '-P', '--format=AllocTRES']);
    assert.match(acct.stdout, /gres\/testslot=1/);
  } finally {
    delete process.env.SETU_JURISDICTION;
    await stopAll(children);
    await c?.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
