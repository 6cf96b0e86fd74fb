/**
 * Governance over real HTTP on an in-process coordinator, against SQLite and PostgreSQL: bad registrations are
 * refused and change nothing, approvals are scoped to the site admin's institution, only approved sites become
 * participants (a declined or pending site gets no task), withdrawal and stop are recorded and audited. Then a
 * real agent process refuses a task under its own local policy and the coordinator records why.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import YAML from 'yaml';
import { startCoordinator, type RunningCoordinator } from './start.js';
import { HttpClient, ApiError } from '../site/http.js';
import { generateSigningKeys } from '../protocol/signing.js';
import type { InviteResponse, StudySpec, UserInviteResponse } from '../protocol/api.js';
import { adminOf, runSetu, stopAll, waitFor } from '../testing/processes.js';
import { createTempDatabase, pgSkipReason } from '../testing/pg.js';

async function refused(p: Promise<unknown>): Promise<ApiError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof ApiError) return e;
    throw e;
  }
  throw new Error('expected a refusal');
}

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
    after(async () => {
      await c?.close();
      await drop?.();
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
    const { id } = await lead.json<{ id: string }>('POST', '/v1/studies', spec(['strict']));
    // A site outside the consortium (no institution): the study starts directly, approved on its behalf.
    await lead.json('POST', `/v1/studies/${id}/start`, {});
    const r = await waitFor('the refusal', async () => {
      const s = await lead.json<{ refusals: { site: string | null; reason: string }[] }>('GET', `/v1/studies/${id}`);
      return s.refusals.length ? s.refusals : undefined;
    }, 30_000, 100);
    assert.equal(r[0]!.site, 'strict');
    assert.match(r[0]!.reason, /refused task .* under its local policy: min-examples: the update would rest on 199 examples; this site's policy requires at least 1000/);
    assert.equal((await lead.json<{ openRound: { received: number } }>('GET', `/v1/studies/${id}`)).openRound.received, 0);
    await lead.json('POST', `/v1/studies/${id}/stop`, {});
  });
});
