import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import YAML from 'yaml';
import { main, type Io } from './compute.js';
import { UsageError } from './args.js';
import { resources } from '../compute/fixtures.js';
import { slurmAvailable } from '../compute/index.js';

function io() {
  const o = { out: '', err: '' };
  const sink: Io = { out: (s) => { o.out += s; }, err: (s) => { o.err += s; } };
  return { o, sink };
}
async function file(name: string, content: unknown): Promise<string> {
  const p = join(await mkdtemp(join(tmpdir(), 'setu-cli-compute-')), name);
  await writeFile(p, typeof content === 'string' ? content : YAML.stringify(content));
  return p;
}

test('resources: a valid YAML file is listed', async () => {
  const { o, sink } = io();
  assert.equal(await main(['resources', '--file', await file('r.yaml', { resources })], sink), 0);
  const lines = o.out.split('\n');
  assert.match(lines[0]!, /^id\s+institution\s+country\s+scheduler/);
  assert.ok(lines.some((l) => /^jp-abci\s+aist\s+JP\s+slurm\s+256\s+16×H100 80G/.test(l)), o.out);
});

test('resources: a bad file is a usage error naming the resource and the field', async () => {
  const bad = [{ ...resources[0]!, jurisdiction: 'India' }];
  await assert.rejects(main(['resources', '--file', await file('r.yaml', bad)], io().sink),
    (e: unknown) => e instanceof UsageError && /resource #1/.test(e.message) && /\/jurisdiction/.test(e.message));
  await assert.rejects(main(['resources', '--file', await file('r.yaml', [resources[0], resources[0]])], io().sink),
    /appears twice/);
});

test('place: in-jurisdiction placement, and a refusal with the reason', async () => {
  const f = await file('r.json', JSON.stringify(resources));
  const ok = io();
  assert.equal(await main(['place', '--file', f, '--site', 'aiims', '--jurisdiction', 'IN', '--gpus', '1', '--json'], ok.sink), 0);
  assert.equal(JSON.parse(ok.o.out).resourceId, 'in-iisc-k8s');
  const no = io();
  assert.equal(await main(['place', '--file', f, '--site', 'aiims', '--jurisdiction', 'IN', '--allowed', 'SG'], no.sink), 1);
  assert.match(no.o.out, /no compute resource is registered in SG/);
  assert.match(no.o.out, /not jp-abci: refused: site aiims's data is in IN and resource jp-abci is in JP/);
  await assert.rejects(main(['place', '--file', f, '--site', 'a', '--jurisdiction', 'IN', '--cpus=1.5'], io().sink),
    /--cpus must be a non-negative integer/);
});

test('ledger: contribution report as table and JSON', async () => {
  const rec = { taskId: 't1', studyId: 'heart', siteId: 'aiims', siteInstitution: 'aiims', siteCountry: 'IN',
    resourceId: 'in-cdac-param', institution: 'cdac', country: 'IN', cpuSeconds: 7200, gpuSeconds: 3600, wallSeconds: 3600 };
  const f = await file('u.json', JSON.stringify([rec]));
  const t = io();
  assert.equal(await main(['ledger', '--file', f], t.sink), 0);
  assert.match(t.o.out, /^IN\s+2\.00\s+1\.00\s+2\.00\s+1\.00\s+0\.00\s+0\.00$/m);
  assert.match(t.o.out, /^JP\s+0\.00/m);
  const j = io();
  assert.equal(await main(['ledger', '--file', f, '--json'], j.sink), 0);
  assert.equal(JSON.parse(j.o.out).contribution.countries[0].contributed.cpuSeconds, 7200);
  await assert.rejects(main(['ledger', '--file', await file('u.json', JSON.stringify([{ ...rec, cpuSeconds: '1' }]))], io().sink),
    /record #1: missing or mistyped cpuSeconds/);
});

test('kubernetes-manifest prints the Job as YAML', async () => {
  const job = { argv: ['python3', 'train.py'], workdir: '/w', cpus: 2, gpus: 1, memoryMiB: 1024, timeLimitSeconds: 600,
    studyId: 's', taskId: 't', siteId: 'x', dataJurisdiction: 'JP' };
  const { o, sink } = io();
  assert.equal(await main(['kubernetes-manifest', '--file', await file('j.yaml', job), '--image', 'trainer:1'], sink), 0);
  const m = YAML.parse(o.out);
  assert.equal(m.kind, 'Job');
  assert.equal(m.spec.template.spec.nodeSelector['setu.dev/jurisdiction'], 'JP');
  assert.equal(m.spec.template.spec.containers[0].resources.limits['nvidia.com/gpu'], '1');
});

test('unknown subcommands and flags are usage errors', async () => {
  await assert.rejects(main(['nope'], io().sink), (e: unknown) => e instanceof UsageError && /unknown compute subcommand/.test(e.message));
  await assert.rejects(main(['resources', '--bogus'], io().sink), UsageError);
});

test('slurm-check runs a job on the real cluster and prints its accounting', async (t) => {
  const a = await slurmAvailable();
  if (!a.ok) {
    if (process.env.CI && process.env.CI !== 'false') assert.fail(`CI: Slurm is required and not available: ${a.detail}`);
    return t.skip(`Slurm not available (${a.detail}); run 'sudo bash .ci/setup-slurm.sh'`);
  }
  const { o, sink } = io();
  assert.equal(await main(['slurm-check', '--json'], sink), 0);
  const r = JSON.parse(o.out);
  assert.equal(r.ok, true);
  assert.equal(r.state, 'COMPLETED');
  assert.match(r.stdout, /^setu slurm-check on /);
  assert.ok(r.usage.cpuSeconds > 0, `TotalCPU ${r.usage.cpuSeconds}`);
  // Each node's GRES, for a resource's capacity.gpus[].gresType: the test node has no GPU (only .ci's testslot).
  assert.ok(Array.isArray(r.gres) && r.gres.length >= 1, JSON.stringify(r.gres));
  assert.deepEqual(r.gres.flatMap((n: { gres: { name: string }[] }) => n.gres.filter((g) => g.name === 'gpu')), []);
});
