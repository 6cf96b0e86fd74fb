// The done criterion of issue 6, with real processes: a coordinator (in JP) and four site agents, each its own
// OS process. The four Fed-Heart-Disease hospitals stand in for a consortium of two Indian hospitals (cleveland,
// hungarian) and two Japanese hospitals (switzerland, va). A study is proposed, approved site by site, refused
// with the rules it breaks named (shipped IN/JP policies), and once the rules are met (SecAgg+ for updates leaving
// India, enough examples behind each update, Indian compute registered) it runs, with the Indian sites' training placed on
// the REAL local Slurm cluster registered as Indian compute, one Japanese site's on Japanese compute (a local
// process executor), the other on its own machine. A site withdraws mid-study and gets no task afterwards.
// Its ledger and its model card are checked against the store's own records and against sacct.
//
// In CI (CI set) a missing Slurm cluster fails this test; on a developer machine without one it skips, saying how
// to bring one up.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, createWriteStream, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import YAML from 'yaml';
import { HttpClient } from '../site/http.js';
import { generateSigningKeys } from '../protocol/signing.js';
import { defaultPolicyDir } from '../governance/policy.js';
import { slurmAvailable } from '../compute/executors/slurm.js';
import { runCommand } from '../compute/executors/executor.js';
import { SETU_MAIN, adminClient, freePort, runSetu, stopAll, waitFor, refused } from '../testing/processes.js';
import type { InviteResponse, StudySpec, UserInviteResponse } from '../protocol/api.js';
import type { ModelCard } from '../governance/model-card.js';

const ci = !!process.env.CI && process.env.CI !== 'false';
let skip: string | false = false;
const children: ChildProcess[] = [];
const root = mkdtempSync(join(tmpdir(), 'setu-consortium-'));
const policiesDir = join(root, 'policies');
let url = '';
let admin: HttpClient;

before(async () => {
  const a = await slurmAvailable();
  if (!a.ok) {
    if (ci) throw new Error(`CI: Slurm is required and not available (${a.detail}); .ci/run must run .ci/setup-slurm.sh`);
    skip = `Slurm not available here (${a.detail}); run 'sudo bash .ci/setup-slurm.sh' to bring up a local cluster`;
    return;
  }
  mkdirSync(policiesDir);
  for (const f of readdirSync(defaultPolicyDir())) copyFileSync(join(defaultPolicyDir(), f), join(policiesDir, f));
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  const dataDir = join(root, 'coordinator');
  const log = createWriteStream(join(root, 'coordinator.log'));
  const c = spawn(process.execPath, [SETU_MAIN, 'coordinator', 'start', '--data-dir', dataDir, '--port', String(port)], {
    stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SETU_JURISDICTION: 'JP', SETU_POLICIES: policiesDir },
  });
  c.stdout!.pipe(log);
  c.stderr!.pipe(log);
  children.push(c);
  await waitFor('the coordinator', async () => (await fetch(`${url}/v1/health`).then((r) => r.ok).catch(() => false)) || undefined, 20_000, 50);
  admin = adminClient(dataDir, url);
});

after(async () => {
  await stopAll(children);
});

const SITES = [
  { name: 'cleveland', center: 0, institution: 'aiims-delhi', jurisdiction: 'IN', compute: { mode: 'placed', cpus: 1, ramGiB: 1 } },
  { name: 'hungarian', center: 1, institution: 'cmc-vellore', jurisdiction: 'IN', compute: { mode: 'placed', cpus: 1, ramGiB: 1 } },
  { name: 'switzerland', center: 2, institution: 'osaka-uh', jurisdiction: 'JP', compute: { mode: 'placed', cpus: 1, ramGiB: 1 } },
  { name: 'va', center: 3, institution: 'keio-uh', jurisdiction: 'JP', compute: { mode: 'own' } },
] as const;

async function user(name: string, role: string, institution?: string): Promise<HttpClient> {
  const inv = await admin.json<UserInviteResponse>('POST', '/v1/users', { name, role, ...(institution ? { institution } : {}), ttlHours: 1 });
  const keys = generateSigningKeys();
  await new HttpClient({ baseUrl: url, giveUpAfterMs: 10_000 }).json('POST', '/v1/users/enrol', { token: inv.token, publicKey: keys.publicKeyRaw });
  return new HttpClient({ baseUrl: url, signer: { keyId: inv.userId, privateKey: keys.privateKey }, giveUpAfterMs: 20_000 });
}


function spec(name: string, localSteps: number, rounds: number): StudySpec {
  return {
    name, description: `Heart-disease risk model across IN and JP hospitals (${name})`, dataset: 'heart', model: { kind: 'logistic', inputDim: 13 },
    strategy: { name: 'FedAvg' }, rounds, fit: { localSteps, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.001 } },
    sites: SITES.map((s) => s.name), minSites: 2, roundTimeoutSeconds: 240, seed: 7,
  };
}

test('a two-country consortium: approvals, a policy refusal naming the rules, placed training on real Slurm, withdrawal, ledger and model card', { timeout: 85_000 }, async (t) => {
  if (skip) return t.skip(skip);
  // ---- the consortium: four hospitals and two compute centres, in India and Japan ----
  for (const s of SITES) await admin.json('POST', '/v1/institutions', { id: s.institution, name: `${s.institution} hospital`, kind: 'hospital', jurisdiction: s.jurisdiction });
  await admin.json('POST', '/v1/institutions', { id: 'cdac', name: 'C-DAC Pune', kind: 'compute_centre', jurisdiction: 'IN' });
  await admin.json('POST', '/v1/institutions', { id: 'riken', name: 'RIKEN R-CCS', kind: 'compute_centre', jurisdiction: 'JP' });
  const bad = await refused(admin.json('POST', '/v1/institutions', { id: 'x', name: 'X', kind: 'bank', jurisdiction: 'IN' }));
  assert.equal(bad.status, 400);
  // Japanese compute only, for now: more capacity than any Indian resource will have.
  await admin.json('POST', '/v1/compute/resources', { id: 'jp-riken-local', name: 'RIKEN workstation pool', institution: 'riken', jurisdiction: 'JP', scheduler: 'local', capacity: { cpus: 64, gpus: [], ramGiB: 256 } });

  for (const s of SITES) {
    const inv = await admin.json<InviteResponse>('POST', '/v1/invites', { siteName: s.name, institution: s.institution, jurisdiction: s.jurisdiction, ttlHours: 1 });
    const dir = join(root, 'sites', s.name);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'site.yaml'), YAML.stringify({ coordinator: url, stateDir: 'state', pollWaitMs: 2000, jurisdiction: s.jurisdiction, compute: s.compute, datasets: { heart: { format: 'fed-heart-disease', center: s.center } } }));
    children.push(runSetu(['site', 'start', '--config', join(dir, 'site.yaml'), '--token', inv.token], join(dir, 'agent.log')));
  }
  await waitFor('four enrolled sites', async () => ((await admin.json<unknown[]>('GET', '/v1/sites')).length === 4 ? true : undefined), 30_000, 100);
  const lead = await user('lead', 'study_lead');
  const siteAdmin = Object.fromEntries(await Promise.all(SITES.map(async (s) => [s.name, await user(`admin-${s.name}`, 'site_admin', s.institution)] as const)));

  // ---- study A: proposed and approved, but it breaks rules ----
  const { id: a } = await lead.json<{ id: string }>('POST', '/v1/studies', spec('too-small-updates', 5, 2));
  let e = await refused(lead.json('POST', `/v1/studies/${a}/start`, {}));
  assert.equal(e.status, 409);
  assert.match(e.message, /propose it/);
  await lead.json('POST', `/v1/studies/${a}/propose`, {});
  // A site admin approves only for their own institution's site.
  e = await refused(siteAdmin.va!.json('POST', `/v1/studies/${a}/approve`, { site: 'cleveland', terms: { purpose: 'x' } }));
  assert.equal(e.status, 403);
  for (const s of SITES) await siteAdmin[s.name]!.json('POST', `/v1/studies/${a}/approve`, { site: s.name, terms: { purpose: 'heart-disease risk research', conditions: ['no commercial use'] } });
  // Wait until every agent has enrolled and declared its cohort and compute mode.
  await waitFor('every site to declare itself', async () => {
    const r = await lead.json<{ violations: { message: string }[] }>('GET', `/v1/studies/${a}/policy-check`).catch(() => undefined);
    return r && !r.violations.some((v) => /not declared/.test(v.message)) ? r : undefined;
  }, 30_000, 200);
  e = await refused(lead.json('POST', `/v1/studies/${a}/start`, {}));
  assert.equal(e.status, 409);
  assert.equal(e.code, 'policy_refused');
  // Every rule broken is named, with the jurisdiction and site: the IN sites' updates would leave India unprotected
  // for a coordinator in Japan, their training could only be placed in Japan (across the border), and 5 steps of
  // batch 4 put 20 examples behind an update where Japan's policy asks for 25.
  for (const [rule, site] of [['update-protection', 'cleveland'], ['update-protection', 'hungarian'], ['compute-location', 'cleveland'], ['min-examples', 'switzerland'], ['min-examples', 'va']]) {
    assert.match(e.message, new RegExp(`/ ${site}\\] ${rule}`), `${rule} for ${site} in: ${e.message}`);
  }
  assert.match(e.message, /resource jp-riken-local is in JP; placing it there would move data across a border/);
  assert.match(e.message, /20 examples behind an update; at least 25 are required/);
  assert.doesNotMatch(e.message, /min-examples[^;]*cleveland|cleveland\] min-examples/); // IN asks for 20: met

  // ---- the consortium meets the rules ----
  // Indian compute: the real local Slurm cluster, registered as C-DAC's (in India).
  const node = (await runCommand('sinfo', ['-h', '-o', '%c %m'])).stdout.trim().split(/\s+/).map(Number);
  await admin.json('POST', '/v1/compute/resources', { id: 'in-cdac-slurm', name: 'C-DAC cluster (Slurm)', institution: 'cdac', jurisdiction: 'IN', scheduler: 'slurm', capacity: { cpus: node[0]!, gpus: [], ramGiB: Math.floor(node[1]! / 1024) } });
  // Updates leaving India are masked: the study runs under SecAgg+ (the IN rule is secagg-or-dp), 100 local steps.
  const { id: b } = await lead.json<{ id: string }>('POST', '/v1/studies', { ...spec('heart-in-jp', 100, 3), privacy: { secagg: { stageTimeoutSeconds: 5 } } });
  await lead.json('POST', `/v1/studies/${b}/propose`, {});
  for (const s of SITES) await siteAdmin[s.name]!.json('POST', `/v1/studies/${b}/approve`, { site: s.name, terms: { purpose: 'heart-disease risk research' } });
  const started = await lead.json<{ status: string; participants: number; placements: Record<string, { resourceId: string; jurisdiction: string }> }>('POST', `/v1/studies/${b}/start`, {});
  assert.equal(started.status, 'running');
  assert.equal(started.participants, 4);
  const placedOn = Object.values(started.placements).map((p) => `${p.resourceId}:${p.jurisdiction}`).sort();
  assert.deepEqual(placedOn, ['in-cdac-slurm:IN', 'in-cdac-slurm:IN', 'jp-riken-local:JP']);

  // ---- va withdraws once round 1 is committed; it gets no task from the next round on ----
  await waitFor('round 1', async () => ((await lead.json<{ round: number }>('GET', `/v1/studies/${b}`)).round >= 1 ? true : undefined), 60_000, 200);
  const w = await siteAdmin.va!.json<{ approvals: { site: string; status: string; fromRound?: number }[] }>('POST', `/v1/studies/${b}/withdraw`, { site: 'va', reason: 'ethics board review' });
  const fromRound = w.approvals.find((x) => x.site === 'va')!.fromRound!;
  assert.ok(fromRound >= 2 && fromRound <= 3, `withdrawal applies from round ${fromRound}`);
  const status = await waitFor('completion', async () => {
    const s = await lead.json<{ status: string; error: string | null }>('GET', `/v1/studies/${b}`);
    return ['completed', 'failed', 'stopped'].includes(s.status) ? s : undefined;
  }, 70_000, 250);
  assert.equal(status.status, 'completed', status.error ?? '');
  const detail = await lead.json<{ metrics: { round: number; site: string | null; phase: string; name: string; value: number }[] }>('GET', `/v1/studies/${b}`);
  for (let r = fromRound; r <= 4; r++) assert.ok(!detail.metrics.some((m) => m.site === 'va' && m.round >= fromRound && m.phase === 'fit'), `va trained in round ≥ ${fromRound}`);
  assert.ok(detail.metrics.some((m) => m.site === 'va' && m.round === 1 && m.phase === 'fit'), 'va trained in round 1');
  assert.ok(detail.metrics.some((m) => m.phase === 'secagg'), 'the fit rounds ran under SecAgg+');

  // ---- the ledger ----
  const usage = await admin.json<{ records: { taskId: string; siteId: string; resourceId: string; scheduler: string; country: string; siteCountry: string; institution: string; cpuSeconds: number; gpuSeconds: number; jobId: string | null }[] }>('GET', `/v1/compute/usage?study=${b}`);
  const slurmRecs = usage.records.filter((x) => x.scheduler === 'slurm');
  assert.ok(slurmRecs.length >= 6, `fit tasks of the IN sites ran on Slurm (3 rounds × 2 sites), got ${slurmRecs.length}`);
  for (const r of slurmRecs) {
    assert.equal(r.resourceId, 'in-cdac-slurm');
    assert.equal(r.country, 'IN');
    assert.equal(r.siteCountry, 'IN');
    assert.match(r.jobId ?? '', /^\d+$/);
    // The recorded CPU time is sacct's own record of that job.
    const sacct = (await runCommand('sacct', ['-j', r.jobId!, '-X', '-n', '-P', '--format=JobID,State'])).stdout.trim();
    assert.match(sacct, new RegExp(`^${r.jobId}\\|COMPLETED`), sacct);
    assert.ok(r.cpuSeconds > 0, `Slurm job ${r.jobId} accounted ${r.cpuSeconds} CPU-s`);
  }
  const jpPlaced = usage.records.filter((x) => x.resourceId === 'jp-riken-local');
  assert.equal(jpPlaced.length, 3, 'switzerland trained 3 rounds on RIKEN');
  assert.ok(jpPlaced.every((x) => x.scheduler === 'local' && x.country === 'JP' && x.institution === 'riken'));
  // No task's compute crossed a border.
  assert.ok(usage.records.every((x) => x.country === x.siteCountry), JSON.stringify(usage.records.filter((x) => x.country !== x.siteCountry)));
  const ledger = await admin.json<{ summary: { total: { cpuSeconds: number; tasks: number } }; contribution: { countries: { key: string; contributed: { cpuSeconds: number }; consumed: { cpuSeconds: number } }[] } }>('GET', `/v1/compute/ledger?study=${b}`);
  assert.equal(ledger.summary.total.tasks, usage.records.length);
  const sum = (c: string) => usage.records.filter((x) => x.country === c).reduce((s, x) => s + x.cpuSeconds, 0);
  for (const c of ledger.contribution.countries) {
    assert.ok(Math.abs(c.contributed.cpuSeconds - sum(c.key)) < 1e-9, `${c.key} contributed`);
    assert.ok(Math.abs(c.consumed.cpuSeconds - c.contributed.cpuSeconds) < 1e-9, `${c.key}: in-jurisdiction compute means contributed = consumed`);
  }
  assert.deepEqual(ledger.contribution.countries.map((c) => c.key), ['IN', 'JP']);

  // ---- the model card ----
  const card = await lead.json<ModelCard>('GET', `/v1/studies/${b}/model-card`);
  assert.deepEqual(card.jurisdictions, ['IN', 'JP']);
  assert.deepEqual(card.institutions.map((i) => i.id).sort(), ['aiims-delhi', 'cmc-vellore', 'keio-uh', 'osaka-uh']);
  assert.equal(card.training.rounds, 3);
  assert.equal(card.training.strategy, 'FedAvg');
  assert.equal(card.privacy.secagg, true);
  assert.equal(card.privacy.dp, null);
  assert.match(card.privacy.summary, /^SecAgg\+/);
  const finalAcc = (site: string | null) => detail.metrics.find((m) => m.round === 3 && m.site === site && m.phase === 'evaluate' && m.name === 'accuracy')?.value;
  for (const s of ['cleveland', 'hungarian', 'switzerland']) {
    const c = card.sites.find((x) => x.name === s)!;
    assert.equal(c.metrics.accuracy, finalAcc(s));
    assert.ok(c.trainExamples! > 0 && c.testExamples! > 0);
  }
  assert.match(card.sites.find((x) => x.name === 'va')!.participation, /^withdrawn from round \d: ethics board review/);
  assert.equal(card.performance.acrossSites.accuracy, finalAcc(null));
  const vals = card.performance.perSite.map((p) => p.value).filter((v): v is number => v !== null);
  assert.ok(Math.abs(card.performance.gap! - (Math.max(...vals) - Math.min(...vals))) < 1e-12);
  assert.deepEqual(card.compute.byCountry.map((c) => c.country), ['IN', 'JP']);
  assert.ok(Math.abs(card.compute.byCountry[0]!.contributedCpuSeconds - sum('IN')) < 1e-9);
  // The seal: the audit entry the card names is the study's completion, and the chain verifies.
  const audit = await admin.json<{ entries: { seq: number; kind: string; subject: string; hash: string }[] }>('GET', '/v1/audit');
  const sealed = audit.entries.find((x) => x.seq === card.audit!.seq)!;
  assert.equal(sealed.hash, card.audit!.head);
  assert.equal(sealed.kind, 'study.completed');
  assert.equal(sealed.subject, b);
  const kinds = audit.entries.filter((x) => x.subject === a || x.subject === b).map((x) => x.kind);
  for (const k of ['study.proposed', 'study.approved', 'study.refused', 'study.started', 'study.withdrawn', 'study.completed']) assert.ok(kinds.includes(k), `audit has ${k}`);
  assert.equal((await admin.json<{ ok: boolean }>('GET', '/v1/audit/verify')).ok, true);

  // ---- release: every sign-off the IN and JP policies ask for, then the release ----
  e = await refused(lead.json('POST', `/v1/studies/${b}/release`, {}));
  assert.equal(e.code, 'signoff_missing');
  for (const s of SITES) assert.match(e.message, new RegExp(`release needs a sign-off by a site_admin for site ${s.name}`));
  assert.match(e.message, /release needs a sign-off by a consortium_admin for the consortium/);
  for (const s of SITES) await siteAdmin[s.name]!.json('POST', `/v1/studies/${b}/signoff`, { site: s.name });
  assert.equal((await refused(lead.json('POST', `/v1/studies/${b}/release`, {}))).code, 'signoff_missing');
  await admin.json('POST', `/v1/studies/${b}/signoff`, {});
  const rel = await lead.json<{ released: boolean; digest: string }>('POST', `/v1/studies/${b}/release`, {});
  assert.equal(rel.released, true);
  assert.equal(rel.digest, card.study.finalModelDigest);

  // ---- the CLI reads the same ledger and card ----
  const env = { ...process.env, SETU_COORDINATOR: url, SETU_KEY_FILE: join(root, 'coordinator', 'admin.key') };
  const cli = (args: string[]) => new Promise<string>((res, rej) => {
    const p = spawn(process.execPath, [SETU_MAIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout!.on('data', (d: Buffer) => { out += d; });
    p.stderr!.on('data', (d: Buffer) => { err += d; });
    p.on('close', (code) => (code === 0 ? res(out) : rej(new Error(`setu ${args.join(' ')} exited ${code}: ${err}`))));
  });
  const cliLedger = JSON.parse(await cli(['compute', 'ledger', '--json', '--study', b]));
  assert.deepEqual(cliLedger, ledger);
  const md = await cli(['model', 'card', b, '--out', join(root, 'cards')]);
  assert.equal(readFileSync(join(root, 'cards', `${b}.model-card.md`), 'utf8') + '\n', md);
  assert.deepEqual(JSON.parse(readFileSync(join(root, 'cards', `${b}.model-card.json`), 'utf8')), card);
  assert.match(md, /^# Model card: heart-in-jp/m);
  assert.match(md, /## Privacy guarantees[\s\S]*SecAgg\+: yes[\s\S]*Differential privacy: none/);
  assert.ok(md.includes(card.audit!.head));
  assert.match(await cli(['compute', 'list']), /in-cdac-slurm\s+cdac\s+IN\s+slurm/);
  const queues = JSON.parse(await cli(['compute', 'queues', '--json'])) as { resource: string; active: unknown[]; finished: number }[];
  assert.deepEqual(queues.map((q) => [q.resource, q.active.length, q.finished]), [['in-cdac-slurm', 0, slurmRecs.length], ['jp-riken-local', 0, 3]]);
});
