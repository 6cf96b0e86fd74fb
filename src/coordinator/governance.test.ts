/**
 * Governance over real HTTP on an in-process coordinator, against SQLite and PostgreSQL: bad registrations are
 * refused and change nothing, approvals are scoped to the site admin's institution, only approved sites become
 * participants (a declined or pending site gets no task), withdrawal and stop are recorded and audited. Then a
 * real agent process refuses a task under its own local policy and the coordinator records why.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { writeKeyFile } from './auth.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import YAML from 'yaml';
import { startCoordinator, type RunningCoordinator } from './start.js';
import { HttpClient } from '../site/http.js';
import { generateSigningKeys } from '../protocol/signing.js';
import { RESULT_META_KEY, type InviteResponse, type StudySpec, type TaskMessage, type UserInviteResponse } from '../protocol/api.js';
import { decodeSafetensors, encodeSafetensors } from '../protocol/safetensors.js';
import { SETU_MAIN, adminOf, runSetu, stopAll, waitFor, refused } from '../testing/processes.js';
import { createTempDatabase, pgSkipReason } from '../testing/pg.js';


const spec = (sites: string[]): StudySpec => ({
  name: 'gov', dataset: 'heart', model: { kind: 'logistic', inputDim: 13 }, strategy: { name: 'FedAvg' }, rounds: 2,
  fit: { localSteps: 100, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.001 } }, sites, roundTimeoutSeconds: 600,
});

for (const backend of ['sqlite', 'postgres'] as const) {
  describe(`governance over HTTP (${backend})`, () => {
    let c: RunningCoordinator;
    let admin: HttpClient;
    let skip: string | false = false;
    let drop: (() => Promise<void>) | undefined;
    const enc = (s: string) => encodeURIComponent(s);

    async function client(keyId: string, privateKey: string) {
      return new HttpClient({ baseUrl: c.url, signer: { keyId, privateKey }, giveUpAfterMs: 5000 });
    }
    async function user(name: string, role: string, institution?: string) {
      const inv = await admin.json<UserInviteResponse>('POST', '/v1/users', { name, role, ...(institution ? { institution } : {}) });
      const k = generateSigningKeys();
      await new HttpClient({ baseUrl: c.url }).json('POST', '/v1/users/enrol', { token: inv.token, publicKey: k.publicKeyRaw });
      return client(inv.userId, k.privateKeyPem);
    }
    async function site(name: string, institution: string, jurisdiction: string) {
      const inv = await admin.json<InviteResponse>('POST', '/v1/invites', { siteName: name, institution, jurisdiction });
      const k = generateSigningKeys();
      const r = await new HttpClient({ baseUrl: c.url }).json<{ siteId: string }>('POST', '/v1/enrol', { token: inv.token, publicKey: k.publicKeyRaw, cohorts: { heart: 150 } });
      return r.siteId;
    }

    before(async () => {
      let db: string | undefined;
      if (backend === 'postgres') {
        skip = await pgSkipReason();
        if (skip) return;
        const t = await createTempDatabase();
        db = t.url;
        drop = t.drop;
      }
      c = await startCoordinator({ dataDir: mkdtempSync(join(tmpdir(), 'setu-gov-')), port: 0, tickMs: 100, ...(db ? { db } : {}) });
      admin = adminOf(c);
    });
    const drops: (() => Promise<void>)[] = [];
    after(async () => {
      await c?.close();
      await drop?.();
      for (const d of drops) await d();
    });

    it('refuses bad institutions and resources, changing nothing', async (t) => {
      if (skip) return t.skip(skip);
      await admin.json('POST', '/v1/institutions', { id: 'aiims', name: 'AIIMS New Delhi', kind: 'hospital', jurisdiction: 'IN' });
      await admin.json('POST', '/v1/institutions', { id: 'cdac', name: 'C-DAC', kind: 'compute_centre', jurisdiction: 'IN' });
      const before = JSON.stringify(await admin.json('GET', '/v1/institutions'));
      assert.equal((await refused(admin.json('POST', '/v1/institutions', { id: 'aiims', name: 'again', kind: 'hospital', jurisdiction: 'IN' }))).status, 409);
      assert.equal((await refused(admin.json('POST', '/v1/institutions', { id: 'x', name: 'X', kind: 'hospital', jurisdiction: 'India' }))).status, 400);
      const res = { id: 'in-hpc', name: 'HPC', institution: 'cdac', jurisdiction: 'IN', scheduler: 'slurm', capacity: { cpus: 8, gpus: [{ model: 'A100', memoryGiB: 40, count: 2 }], ramGiB: 64 } };
      let e = await refused(admin.json('POST', '/v1/compute/resources', { ...res, institution: 'nobody' }));
      assert.equal(e.status, 409);
      assert.match(e.message, /no institution nobody/);
      e = await refused(admin.json('POST', '/v1/compute/resources', { ...res, capacity: { cpus: 0, gpus: [], ramGiB: 1 } }));
      assert.equal(e.status, 400);
      e = await refused(admin.json('POST', '/v1/compute/resources', { ...res, id: 'k8s', scheduler: 'kubernetes', schedulerConfig: { image: 'ghcr.io/setu/trainer:1' } }));
      assert.match(e.message, /kubeContext or kubeconfig/);
      // A site admin registers compute only for their own institution.
      const other = await user('admin-aiims', 'site_admin', 'aiims');
      assert.equal((await refused(other.json('POST', '/v1/compute/resources', res))).status, 403);
      assert.deepEqual(await admin.json('GET', '/v1/compute/resources'), []);
      assert.equal(JSON.stringify(await admin.json('GET', '/v1/institutions')), before);
      await admin.json('POST', '/v1/compute/resources', res);
      const list = await admin.json<{ id: string; free: { gpus: number } }[]>('GET', '/v1/compute/resources');
      assert.deepEqual(list.map((r) => [r.id, r.free.gpus]), [['in-hpc', 2]]);
    });

    it('a placed task: placement in the data\'s jurisdiction, job and usage recorded once, ledger and model card', { timeout: 30_000 }, async (t) => {
      if (skip) return t.skip(skip);
      // Its own coordinator, declared to run in India (SETU_JURISDICTION is read when the routes are registered).
      let db: string | undefined;
      let dropHere: (() => Promise<void>) | undefined;
      if (backend === 'postgres') ({ url: db, drop: dropHere } = await createTempDatabase());
      process.env.SETU_JURISDICTION = 'IN';
      const c2 = await startCoordinator({ dataDir: mkdtempSync(join(tmpdir(), 'setu-gov-p-')), port: 0, tickMs: 50, ...(db ? { db } : {}) }).finally(() => { delete process.env.SETU_JURISDICTION; });
      try {
        const adm0 = adminOf(c2);
        const signed = (keyId: string, pem: string) => new HttpClient({ baseUrl: c2.url, signer: { keyId, privateKey: pem }, giveUpAfterMs: 5000 });
        const mkUser = async (name: string, role: string, institution?: string) => {
          const inv = await adm0.json<UserInviteResponse>('POST', '/v1/users', { name, role, ...(institution ? { institution } : {}) });
          const k = generateSigningKeys();
          await new HttpClient({ baseUrl: c2.url }).json('POST', '/v1/users/enrol', { token: inv.token, publicKey: k.publicKeyRaw });
          return signed(inv.userId, k.privateKeyPem);
        };
        await adm0.json('POST', '/v1/institutions', { id: 'kem', name: 'KEM Mumbai', kind: 'hospital', jurisdiction: 'IN' });
        await adm0.json('POST', '/v1/institutions', { id: 'cdac', name: 'C-DAC', kind: 'compute_centre', jurisdiction: 'IN' });
        await adm0.json('POST', '/v1/institutions', { id: 'riken', name: 'RIKEN', kind: 'compute_centre', jurisdiction: 'JP' });
        await adm0.json('POST', '/v1/compute/resources', { id: 'in-pool', name: 'pool', institution: 'cdac', jurisdiction: 'IN', scheduler: 'local', capacity: { cpus: 4, gpus: [], ramGiB: 8 } });
        await adm0.json('POST', '/v1/compute/resources', { id: 'jp-big', name: 'big', institution: 'riken', jurisdiction: 'JP', scheduler: 'local', capacity: { cpus: 512, gpus: [], ramGiB: 4096 } });
        const inv = await adm0.json<InviteResponse>('POST', '/v1/invites', { siteName: 's-p', institution: 'kem', jurisdiction: 'IN' });
        const k = generateSigningKeys();
        const { siteId } = await new HttpClient({ baseUrl: c2.url }).json<{ siteId: string }>('POST', '/v1/enrol', { token: inv.token, publicKey: k.publicKeyRaw, cohorts: { heart: 150 } });
        const agent = signed(siteId, k.privateKeyPem);
        await agent.json('PUT', '/v1/agent/compute', { mode: 'placed', cpus: 2, ramGiB: 2 });
        const lead = await mkUser('lead', 'study_lead');
        const adm = await mkUser('adm-kem', 'site_admin', 'kem');
        const { id } = await lead.json<{ id: string }>('POST', '/v1/studies', { ...spec(['s-p']), rounds: 1 });
        await lead.json('POST', `/v1/studies/${id}/propose`, {});
        await adm.json('POST', `/v1/studies/${id}/approve`, { site: 's-p', terms: { purpose: 'research' } });
        const st = await lead.json<{ placements: Record<string, { resourceId: string }> }>('POST', `/v1/studies/${id}/start`, {});
        assert.deepEqual(Object.values(st.placements).map((p) => p.resourceId), ['in-pool'], 'in India, although Japan has more free capacity');
        // The agent's side, by hand: task, placement, job, usage, result; then the evaluation round.
        const task = await waitFor('a task', async () => { const r = await agent.request('GET', '/v1/agent/task?waitMs=1000'); return r.status === 200 ? r.json<TaskMessage>() : undefined; }, 10_000);
        const placed = await agent.json<{ placement: { resourceId: string; reason: string } }>('POST', `/v1/agent/tasks/${enc(task.taskId)}/placement`, {});
        assert.equal(placed.placement.resourceId, 'in-pool');
        assert.match(placed.placement.reason, /data stays in IN/);
        assert.equal((await agent.json<{ placement: { placedAt: number } }>('POST', `/v1/agent/tasks/${enc(task.taskId)}/placement`, {})).placement.placedAt, (placed.placement as unknown as { placedAt: number }).placedAt, 'asking again returns the same placement');
        await agent.json('POST', `/v1/agent/tasks/${enc(task.taskId)}/job`, { jobId: 'local-1', state: 'running' });
        const queues = await adm0.json<{ resource: string; active: { state: string; jobId: string }[] }[]>('GET', '/v1/compute/queues');
        assert.deepEqual(queues.find((q) => q.resource === 'in-pool')!.active.map((a) => [a.state, a.jobId]), [['running', 'local-1']]);
        const usage = { resourceId: 'in-pool', scheduler: 'local', cpuSeconds: 1.5, gpuSeconds: 0, wallSeconds: 2, cpuBasis: 'measured', jobId: 'local-1' };
        assert.equal((await refused(agent.json('POST', `/v1/agent/tasks/${enc(task.taskId)}/usage`, { ...usage, resourceId: 'jp-big' }))).status, 400, 'a site cannot bill another resource');
        await agent.json('POST', `/v1/agent/tasks/${enc(task.taskId)}/usage`, usage);
        assert.equal((await refused(agent.json('POST', `/v1/agent/tasks/${enc(task.taskId)}/usage`, usage))).status, 409, 'usage is recorded once');
        const global = decodeSafetensors((await agent.request('GET', `/v1/agent/models/${enc(task.modelVersionId)}`)).body).weights;
        const meta = { taskId: task.taskId, numExamples: 150, trainMetrics: { loss: 0.6 }, evalMetrics: { loss: 0.7, accuracy: 0.6 }, evalExamples: 50 };
        await agent.request('POST', `/v1/agent/tasks/${enc(task.taskId)}/result`, { type: 'application/octet-stream', data: encodeSafetensors(global, { [RESULT_META_KEY]: JSON.stringify(meta) }) });
        const ev = await waitFor('the evaluation task', async () => { const r = await agent.request('GET', '/v1/agent/task?waitMs=1000'); return r.status === 200 ? r.json<TaskMessage>() : undefined; }, 10_000);
        await agent.json('POST', `/v1/agent/tasks/${enc(ev.taskId)}/usage`, { resourceId: 'site:s-p', scheduler: 'in-process', cpuSeconds: 0.25, gpuSeconds: 0, wallSeconds: 0.3, cpuBasis: 'measured' });
        await agent.json('POST', `/v1/agent/tasks/${enc(ev.taskId)}/result`, { taskId: ev.taskId, numExamples: 150, evalMetrics: { loss: 0.65, accuracy: 0.62 }, evalExamples: 50 });
        await waitFor('completion', async () => ((await lead.json<{ status: string }>('GET', `/v1/studies/${id}`)).status === 'completed' ? true : undefined), 10_000);
        const ledger = await adm0.json<{ contribution: { countries: { key: string; contributed: { cpuSeconds: number; tasks: number }; consumed: { cpuSeconds: number } }[]; institutions: { key: string; contributed: { cpuSeconds: number }; consumed: { cpuSeconds: number } }[] } }>('GET', `/v1/compute/ledger?study=${id}`);
        assert.deepEqual(ledger.contribution.countries.map((x) => [x.key, x.contributed.cpuSeconds, x.consumed.cpuSeconds, x.contributed.tasks]), [['IN', 1.75, 1.75, 2], ['JP', 0, 0, 0]]);
        assert.deepEqual(ledger.contribution.institutions.map((x) => [x.key, x.contributed.cpuSeconds, x.consumed.cpuSeconds]), [['cdac', 1.5, 0], ['kem', 0.25, 1.75]]);
        const card = await lead.json<{ sites: { name: string; metrics: Record<string, number> }[]; performance: { gap: number }; compute: { byCountry: { country: string; consumedCpuSeconds: number }[] }; audit: { seq: number } }>('GET', `/v1/studies/${id}/model-card`);
        assert.deepEqual(card.sites.map((x) => [x.name, x.metrics.accuracy]), [['s-p', 0.62]]);
        assert.equal(card.performance.gap, 0);
        assert.deepEqual(card.compute.byCountry, [{ country: 'IN', contributedCpuSeconds: 1.75, contributedGpuSeconds: 0, consumedCpuSeconds: 1.75, consumedGpuSeconds: 0 }]);
        // Written once: asking again returns the same card, sealed by the same head.
        assert.equal((await lead.json<{ audit: { seq: number } }>('GET', `/v1/studies/${id}/model-card`)).audit.seq, card.audit.seq);
        assert.match(new TextDecoder().decode((await lead.request('GET', `/v1/studies/${id}/model-card?format=markdown`)).body), /^# Model card: gov/);
      } finally {
        await c2.close();
        // Dropped with the suite's own database in after(): DROP … WITH (FORCE) once every pool here has ended.
        if (dropHere) drops.push(dropHere);
      }
    });

    it('only approved sites take part; approvals are scoped; withdrawal and stop are audited', async (t) => {
      if (skip) return t.skip(skip);
      await admin.json('POST', '/v1/institutions', { id: 'osaka', name: 'Osaka UH', kind: 'hospital', jurisdiction: 'JP' });
      const [a, b, d] = [await site('s-a', 'aiims', 'IN'), await site('s-b', 'osaka', 'JP'), await site('s-d', 'osaka', 'JP')];
      const lead = await user('lead', 'study_lead');
      const adminA = await user('adm-a', 'site_admin', 'aiims');
      const adminJ = await user('adm-j', 'site_admin', 'osaka');
      const { id } = await lead.json<{ id: string }>('POST', '/v1/studies', spec(['s-a', 's-b', 's-d']));
      assert.equal((await refused(adminA.json('POST', `/v1/studies/${id}/approve`, { site: 's-a', terms: { purpose: 'r' } }))).message.match(/propose it/) !== null, true);
      await lead.json('POST', `/v1/studies/${id}/propose`, {});
      assert.equal((await refused(adminA.json('POST', `/v1/studies/${id}/approve`, { site: 's-b', terms: { purpose: 'r' } }))).status, 403);
      assert.equal((await refused(admin.json('POST', `/v1/studies/${id}/approve`, { site: 's-a', terms: { purpose: 'r' } }))).status, 403, 'the consortium admin cannot approve for a site');
      assert.equal((await refused(adminJ.json('POST', `/v1/studies/${id}/decline`, { site: 's-b', reason: '' }))).status, 400);
      await adminA.json('POST', `/v1/studies/${id}/approve`, { site: 's-a', terms: { purpose: 'heart research', conditions: ['no commercial use'] } });
      await adminJ.json('POST', `/v1/studies/${id}/decline`, { site: 's-b', reason: 'no capacity this quarter' });
      // s-d stays pending. The coordinator is in no declared jurisdiction: JP's rule (updates leaving Japan need
      // SecAgg+) refuses nothing here because s-d and s-b do not take part; IN's needs SecAgg+ or DP for s-a.
      let e = await refused(lead.json('POST', `/v1/studies/${id}/start`, {}));
      assert.equal(e.code, 'policy_refused');
      assert.match(e.message, /\[IN \/ s-a\] update-protection/);
      assert.doesNotMatch(e.message, /s-b|s-d/);
      // Declined and pending sites never become participants, whatever the policy says.
      const gov = await lead.json<{ state: string; approvals: { site: string; status: string }[]; eligible: string[] }>('GET', `/v1/studies/${id}/governance`);
      assert.equal(gov.state, 'proposed');
      assert.deepEqual(gov.eligible, ['s-a']);
      assert.deepEqual(gov.approvals.map((x) => [x.site, x.status]), [['s-a', 'approved'], ['s-b', 'declined'], ['s-d', 'pending']]);
      const w = await adminA.json<{ approvals: { site: string; status: string }[]; eligible: string[] }>('POST', `/v1/studies/${id}/withdraw`, { site: 's-a', reason: 'changed our mind' });
      assert.deepEqual(w.eligible, []);
      e = await refused(lead.json('POST', `/v1/studies/${id}/start`, {}));
      assert.equal(e.code, 'lifecycle');
      assert.match(e.message, /0 site\(s\) approved/);
      await lead.json('POST', `/v1/studies/${id}/stop`, { reason: 'no sites left' });
      const events = (await lead.json<{ events: { kind: string }[] }>('GET', `/v1/studies/${id}/governance`)).events.map((x) => x.kind);
      assert.deepEqual(events, ['study.proposed', 'study.approved', 'study.declined', 'study.refused', 'study.withdrawn', 'study.stopped']);
      const audit = await admin.json<{ entries: { kind: string; subject: string }[] }>('GET', '/v1/audit');
      assert.deepEqual(audit.entries.filter((x) => x.subject === id).map((x) => x.kind), events);
      assert.equal((await admin.json<{ ok: boolean }>('GET', '/v1/audit/verify')).ok, true);
      // The ids are not used otherwise; this keeps the linter from flagging them.
      assert.ok(a && b && d);
    });
  });
}

describe('a site refuses a task under its own local policy', () => {
  let c: RunningCoordinator;
  const children: ReturnType<typeof runSetu>[] = [];
  before(async () => {
    c = await startCoordinator({ dataDir: mkdtempSync(join(tmpdir(), 'setu-gov-local-')), port: 0, tickMs: 100 });
  });
  after(async () => {
    await stopAll(children);
    await c?.close();
  });

  it('the agent refuses, trains nothing, and the coordinator records the rule and why', { timeout: 60_000 }, async () => {
    const admin = adminOf(c);
    const dir = mkdtempSync(join(tmpdir(), 'setu-site-'));
    mkdirSync(join(dir, 'state'));
    writeFileSync(join(dir, 'local-policy.yaml'), YAML.stringify({ site: 'strict', notice: 'our ethics board', rules: { minExamplesPerUpdate: 1000 } }));
    writeFileSync(join(dir, 'site.yaml'), YAML.stringify({ coordinator: c.url, stateDir: 'state', pollWaitMs: 2000, policy: 'local-policy.yaml', datasets: { heart: { format: 'fed-heart-disease', center: 0 } } }));
    const inv = await admin.json<InviteResponse>('POST', '/v1/invites', { siteName: 'strict' });
    children.push(runSetu(['site', 'start', '--config', join(dir, 'site.yaml'), '--token', inv.token], join(dir, 'agent.log')));
    await waitFor('enrolment', async () => ((await admin.json<unknown[]>('GET', '/v1/sites')).length === 1 ? true : undefined), 20_000);
    const leadInv = await admin.json<UserInviteResponse>('POST', '/v1/users', { name: 'lead', role: 'study_lead' });
    const k = generateSigningKeys();
    await new HttpClient({ baseUrl: c.url }).json('POST', '/v1/users/enrol', { token: leadInv.token, publicKey: k.publicKeyRaw });
    const lead = new HttpClient({ baseUrl: c.url, signer: { keyId: leadInv.userId, privateKey: k.privateKey } });
    const { id } = await lead.json<{ id: string }>('POST', '/v1/studies', { ...spec(['strict']), roundTimeoutSeconds: 3 });
    // A site outside the consortium (no institution): the study starts directly, approved on its behalf.
    await lead.json('POST', `/v1/studies/${id}/start`, {});
    const r = await waitFor('the refusal', async () => {
      const s = await lead.json<{ refusals: { site: string | null; reason: string }[] }>('GET', `/v1/studies/${id}`);
      return s.refusals.length ? s.refusals : undefined;
    }, 30_000, 100);
    assert.equal(r[0]!.site, 'strict');
    assert.match(r[0]!.reason, /refused task .*: local policy: min-examples: the update would rest on 199 examples; this site's policy requires at least 1000/);
    assert.equal((await lead.json<{ openRound: { received: number } }>('GET', `/v1/studies/${id}`)).openRound.received, 0);
    // With no result the round's deadline passes and the study fails; its lifecycle stops with that reason, audited.
    const g = await waitFor('the failure', async () => {
      const x = await lead.json<{ status: string; state: string; events: { kind: string; data: { reason?: string } }[] }>('GET', `/v1/studies/${id}/governance`);
      return x.status === 'failed' ? x : undefined;
    }, 20_000, 200);
    assert.equal(g.state, 'stopped');
    assert.match(g.events.find((x) => x.kind === 'study.stopped')!.data.reason!, /^failed: round 1: 0 of 1 sites reported/);
    // The refused task was closed: the agent refused it once, not on every poll.
    assert.equal(g.events.filter((x) => x.kind === 'task.refused').length, 1);
    const audit = await admin.json<{ entries: { kind: string; subject: string }[] }>('GET', '/v1/audit');
    assert.equal(audit.entries.filter((x) => x.subject === id).at(-1)!.kind, 'study.stopped');
  });
});

describe('the governance CLI against a coordinator', () => {
  let c: RunningCoordinator;
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'setu-gov-cli-'));
    c = await startCoordinator({ dataDir: join(dir, 'coord'), port: 0, tickMs: 100 });
  });
  after(async () => {
    await c?.close();
  });

  function cli(keyFile: string, args: string[]): Promise<{ code: number; out: string; err: string }> {
    return new Promise((res) => {
      const p = spawn(process.execPath, [SETU_MAIN, ...args], { env: { ...process.env, SETU_COORDINATOR: c.url, SETU_KEY_FILE: keyFile }, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      p.stdout!.on('data', (d: Buffer) => { out += d; });
      p.stderr!.on('data', (d: Buffer) => { err += d; });
      p.on('close', (code) => res({ code: code ?? 1, out, err }));
    });
  }
  async function keyFor(name: string, role: string, institution?: string): Promise<string> {
    const inv = await adminOf(c).json<UserInviteResponse>('POST', '/v1/users', { name, role, ...(institution ? { institution } : {}) });
    const k = generateSigningKeys();
    await new HttpClient({ baseUrl: c.url }).json('POST', '/v1/users/enrol', { token: inv.token, publicKey: k.publicKeyRaw });
    const file = join(dir, `${name}.key`);
    writeKeyFile(file, { keyId: inv.userId, privateKey: k.privateKeyPem, publicKey: k.publicKeyRaw });
    return file;
  }

  it('institution add/list, study propose/approve/governance/policy-check', { timeout: 60_000 }, async () => {
    const adminKey = join(dir, 'coord', 'admin.key');
    let r = await cli(adminKey, ['institution', 'add', '--id', 'aiims', '--name', 'AIIMS New Delhi', '--kind', 'hospital', '--jurisdiction', 'IN']);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /institution aiims \(AIIMS New Delhi, hospital, IN\) registered/);
    r = await cli(adminKey, ['institution', 'add', '--id', 'bank', '--name', 'B', '--kind', 'bank', '--jurisdiction', 'IN']);
    assert.equal(r.code, 2);
    assert.match(r.err, /--kind must be one of hospital, university, compute_centre, company, got "bank"/);
    r = await cli(adminKey, ['institution', 'list', '--json']);
    assert.deepEqual((JSON.parse(r.out) as { id: string }[]).map((i) => i.id), ['aiims']);
    const inv = await adminOf(c).json<InviteResponse>('POST', '/v1/invites', { siteName: 'aiims-heart', institution: 'aiims', jurisdiction: 'IN' });
    await new HttpClient({ baseUrl: c.url }).json('POST', '/v1/enrol', { token: inv.token, publicKey: generateSigningKeys().publicKeyRaw, cohorts: { heart: 199 } });
    const leadKey = await keyFor('lead', 'study_lead');
    const siteAdminKey = await keyFor('adm', 'site_admin', 'aiims');
    const { id } = await new HttpClient({ baseUrl: c.url, signer: { keyId: JSON.parse(readFileSync(leadKey, 'utf8')).keyId, privateKey: JSON.parse(readFileSync(leadKey, 'utf8')).privateKey } }).json<{ id: string }>('POST', '/v1/studies', spec(['aiims-heart']));
    r = await cli(leadKey, ['study', 'propose', id]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, new RegExp(`study ${id}: proposed`));
    r = await cli(siteAdminKey, ['study', 'approve', id, '--site', 'aiims-heart', '--terms', 'heart-disease research', '--condition', 'no commercial use']);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /aiims-heart\s+approved\s+user-\w+\s+heart-disease research; no commercial use/);
    r = await cli(leadKey, ['study', 'policy-check', id]);
    assert.equal(r.code, 1);
    assert.match(r.out, /breaks 1 jurisdiction rule\(s\)/);
    assert.match(r.out, /IN\s+aiims-heart\s+update-protection/);
    r = await cli(leadKey, ['study', 'governance', id, '--json']);
    assert.deepEqual((JSON.parse(r.out) as { events: { kind: string }[] }).events.map((e) => e.kind), ['study.proposed', 'study.approved']);
    // Compute: register from a YAML file (a bad one changes nothing), list, queues, usage, ledger.
    await cli(adminKey, ['institution', 'add', '--id', 'cdac', '--name', 'C-DAC', '--kind', 'compute_centre', '--jurisdiction', 'IN']);
    const good = join(dir, 'resources.yaml');
    writeFileSync(good, YAML.stringify({ resources: [
      { id: 'in-param', name: 'PARAM (share)', institution: 'cdac', jurisdiction: 'IN', scheduler: 'slurm', capacity: { cpus: 128, gpus: [{ model: 'A100', memoryGiB: 40, count: 8 }], ramGiB: 1024 }, availability: { now: { cpus: 64, gpus: 2, ramGiB: 512 } }, schedulerConfig: { partition: 'gpu' } },
    ] }));
    const badFile = join(dir, 'bad.yaml');
    writeFileSync(badFile, YAML.stringify([{ id: 'in-x', name: 'x', institution: 'cdac', jurisdiction: 'India', scheduler: 'slurm', capacity: { cpus: 1, gpus: [], ramGiB: 1 } }]));
    r = await cli(adminKey, ['compute', 'add', '--file', badFile]);
    assert.equal(r.code, 1);
    assert.match(r.err, /jurisdiction/);
    r = await cli(adminKey, ['compute', 'add', '--file', good]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /resource in-param created/);
    r = await cli(leadKey, ['compute', 'list']);
    assert.match(r.out, /in-param\s+cdac\s+IN\s+slurm\s+128\s+8×A100 40G\s+1024\s+64\/2\/512\s+0/);
    r = await cli(leadKey, ['compute', 'queues', '--json']);
    assert.deepEqual(JSON.parse(r.out), [{ resource: 'in-param', scheduler: 'slurm', jurisdiction: 'IN', active: [], finished: 0 }]);
    r = await cli(leadKey, ['compute', 'usage', '--json']);
    assert.deepEqual(JSON.parse(r.out).records, []);
    r = await cli(leadKey, ['compute', 'ledger']);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^Country contribution/);
  });
});
