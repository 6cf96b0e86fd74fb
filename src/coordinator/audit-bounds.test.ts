/**
 * What a site declares about itself, and what refusals leave behind, on SQLite and PostgreSQL:
 *  - every task carries a signed checkpoint of the audit head;
 *  - a cohort raised mid-study is audited, and buys no larger FedAvg weight in the running study (400 naming
 *    numExamples);
 *  - the same refused upload sent 20 times leaves one counted refusal row and 1 + log2(20) audit entries;
 *  - a placement refusal is one transaction with an audit entry, counted the same way;
 *  - a site's /refuse closes the task, records the refusal and audits it in one transaction: a failure inside it
 *    leaves no refusal behind, and of five concurrent refusals exactly one is recorded;
 *  - a duplicate usage report is the primary key's decision (the store says so, not the driver's message);
 *  - a site admin revokes a linked site of their own institution, not another's;
 *  - GET /v1/audit is paged by default, with a maximum.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCoordinator, type RunningCoordinator } from './start.js';
import { inject, type Identity } from '../testing/inject.js';
import { generateSigningKeys } from '../protocol/signing.js';
import { RESULT_META_KEY, type StudySpec, type TaskMessage } from '../protocol/api.js';
import { decodeSafetensors, encodeSafetensors } from '../protocol/safetensors.js';
import { checkpointProblem } from '../protocol/audit-checkpoint.js';
import type { Store } from '../store/store.js';
import { AUDIT_PAGE_DEFAULT, AUDIT_PAGE_MAX } from './routes/audit.js';
import { createTempDatabase, pgSkipReason } from '../testing/pg.js';

/** A study's refusal rows with their codes and counts. */
async function listRefusalCounts(store: Store, studyId: string): Promise<{ taskId: string | null; siteId: string | null; code: string | null; count: number; reason: string }[]> {
  return (await store.listRefusals(studyId)).map((r) => ({ taskId: r.task_id, siteId: r.site_id, code: r.code, count: r.count, reason: r.reason }));
}

for (const backend of ['sqlite', 'postgres'] as const) {
  describe(`audit bounds and atomicity (${backend})`, () => {
    let c: RunningCoordinator;
    let dir: string;
    let skip: string | false = false;
    let drop: (() => Promise<void>) | undefined;
    let admin: Identity, lead: Identity, kemAdmin: Identity, cdacAdmin: Identity;
    let sa: Identity, sb: Identity, sc: Identity;
    let studyId: string;
    const tasks = new Map<string, TaskMessage>();
    const enc = encodeURIComponent;
    const call = (method: string, path: string, o: Parameters<typeof inject>[3] = {}) => inject(c.app, method, path, o);
    const ok = async (method: string, path: string, o: Parameters<typeof inject>[3] = {}) => {
      const r = await call(method, path, o);
      assert.ok(r.status < 300, `${method} ${path}: ${r.status} ${r.body}`);
      return r.json;
    };
    const entries = async () => (await c.audit.entries()) as { seq: number; kind: string; subject: string; data: any }[];

    async function user(name: string, role: string, institution?: string): Promise<Identity> {
      const inv = await ok('POST', '/v1/users', { as: admin, json: { name, role, ...(institution ? { institution } : {}) } });
      const k = generateSigningKeys();
      await ok('POST', '/v1/users/enrol', { json: { token: inv.token, publicKey: k.publicKeyRaw } });
      return { keyId: inv.userId, privateKey: k.privateKeyPem };
    }
    async function site(name: string, extra: Record<string, string> = {}): Promise<Identity> {
      const inv = await ok('POST', '/v1/invites', { as: admin, json: { siteName: name, ...extra } });
      const k = generateSigningKeys();
      const e = await ok('POST', '/v1/enrol', { json: { token: inv.token, publicKey: k.publicKeyRaw, cohorts: { heart: 100 } } });
      return { keyId: e.siteId, privateKey: k.privateKeyPem };
    }
    const update = (w: Record<string, { shape: number[]; data: Float32Array }>, meta: Record<string, unknown>) => Buffer.from(encodeSafetensors(w, { [RESULT_META_KEY]: JSON.stringify(meta) }));

    before(async () => {
      let db: string | undefined;
      if (backend === 'postgres') {
        skip = await pgSkipReason();
        if (skip) return;
        ({ url: db, drop } = await createTempDatabase());
      }
      dir = mkdtempSync(join(tmpdir(), 'setu-bounds-'));
      process.env.SETU_JURISDICTION = 'IN'; // read when the routes are registered
      c = await startCoordinator({ dataDir: dir, port: 0, tickMs: 50, ...(db ? { db } : {}) }).finally(() => { delete process.env.SETU_JURISDICTION; });
      admin = { keyId: c.adminKey!.keyId, privateKey: c.adminKey!.privateKey };
      await ok('POST', '/v1/institutions', { as: admin, json: { id: 'kem', name: 'KEM Mumbai', kind: 'hospital', jurisdiction: 'IN' } });
      await ok('POST', '/v1/institutions', { as: admin, json: { id: 'cdac', name: 'C-DAC', kind: 'compute_centre', jurisdiction: 'IN' } });
      await ok('POST', '/v1/compute/resources', { as: admin, json: { id: 'in-pool', name: 'pool', institution: 'cdac', jurisdiction: 'IN', scheduler: 'local', capacity: { cpus: 4, gpus: [], ramGiB: 8 } } });
      sa = await site('s-a', { institution: 'kem', jurisdiction: 'IN' });
      sb = await site('s-b', { institution: 'kem', jurisdiction: 'IN' });
      sc = await site('s-c', { institution: 'kem', jurisdiction: 'IN' });
      await ok('PUT', '/v1/agent/compute', { as: sb, json: { mode: 'placed', cpus: 2, ramGiB: 2 } });
      lead = await user('lead', 'study_lead');
      kemAdmin = await user('adm-kem', 'site_admin', 'kem');
      cdacAdmin = await user('adm-cdac', 'site_admin', 'cdac');
      const spec: StudySpec = {
        name: 'bounds', dataset: 'heart', model: { kind: 'logistic', inputDim: 13 }, strategy: { name: 'FedAvg' }, rounds: 2,
        fit: { localSteps: 10, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.1 } }, sites: ['s-a', 's-b', 's-c'], roundTimeoutSeconds: 3600,
      };
      studyId = (await ok('POST', '/v1/studies', { as: lead, json: spec })).id;
      await ok('POST', `/v1/studies/${studyId}/propose`, { as: lead, json: {} });
      for (const s of ['s-a', 's-b', 's-c']) await ok('POST', `/v1/studies/${studyId}/approve`, { as: kemAdmin, json: { site: s, terms: { purpose: 'research' } } });
      await ok('POST', `/v1/studies/${studyId}/start`, { as: lead, json: {} });
      for (const [n, s] of [['a', sa], ['b', sb], ['c', sc]] as const) {
        const r = await call('GET', '/v1/agent/task?waitMs=5000', { as: s });
        assert.equal(r.status, 200, r.body);
        tasks.set(n, r.json);
      }
    });
    after(async () => {
      await c?.close();
      await drop?.();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it('hands every task with a signed checkpoint of the audit head', async (t) => {
      if (skip) return t.skip(skip);
      const cp = tasks.get('a')!.auditCheckpoint!;
      assert.equal(checkpointProblem(cp, c.audit.key.publicKeyRaw), null);
      const log = await entries();
      assert.ok(cp.count >= 1 && cp.count <= log.length);
      assert.equal((await c.audit.entries())[cp.count - 1]!.hash, cp.head);
    });

    it('audits a cohort raised mid-study, and refuses an update weighted beyond the cohort declared at start (400 naming numExamples)', async (t) => {
      if (skip) return t.skip(skip);
      const task = tasks.get('a')!;
      await ok('PUT', '/v1/agent/cohorts', { as: sa, json: { cohorts: { heart: 1_000_000_000 } } });
      const raised = (await entries()).filter((e) => e.kind === 'site.cohorts_declared');
      assert.equal(raised.length, 1);
      assert.deepEqual(raised[0]!.data.changes, [{ dataset: 'heart', before: 100, after: 1_000_000_000 }]);
      await ok('PUT', '/v1/agent/cohorts', { as: sa, json: { cohorts: { heart: 1_000_000_000 } } });
      assert.equal((await entries()).filter((e) => e.kind === 'site.cohorts_declared').length, 1, 'the same sizes again change nothing and add no entry');
      const global = decodeSafetensors(await c.store.blobs.readAll((await c.store.getModelVersion(task.modelVersionId))!.digest)).weights;
      const meta = (n: number) => ({ taskId: task.taskId, numExamples: n, trainMetrics: { loss: 0.5 }, evalMetrics: { loss: 0.5 }, evalExamples: 10 });
      const big = await call('POST', `/v1/agent/tasks/${enc(task.taskId)}/result`, { as: sa, raw: update(global, meta(1_000_000)) });
      assert.equal(big.status, 400, big.body);
      assert.match(big.json.message, /numExamples 1000000 exceeds the 100 examples site s-a declared for "heart" when study bounds started/);
      const fair = await call('POST', `/v1/agent/tasks/${enc(task.taskId)}/result`, { as: sa, raw: update(global, meta(100)) });
      assert.equal(fair.status, 200, fair.body);
    });

    it('counts a refused upload sent 20 times in one row, with audit entries for the 1st, 2nd, 4th, 8th and 16th', async (t) => {
      if (skip) return t.skip(skip);
      const task = tasks.get('c')!;
      const junk = update({ x: { shape: [1], data: new Float32Array([1]) } }, { taskId: task.taskId, numExamples: 1 });
      for (let i = 0; i < 20; i++) assert.equal((await call('POST', `/v1/agent/tasks/${enc(task.taskId)}/result`, { as: sc, raw: junk })).status, 400);
      const rows = (await listRefusalCounts(c.store, studyId)).filter((r) => r.taskId === task.taskId);
      assert.deepEqual(rows.map((r) => [r.code, r.count]), [['wrong_shape', 20]]);
      const audited = (await entries()).filter((e) => e.kind === 'update.refused' && e.subject === task.taskId);
      assert.deepEqual(audited.map((e) => e.data.count), [1, 2, 4, 8, 16]);
    });

    it('/refuse is one transaction: a failure inside it leaves no refusal, and five concurrent refusals record one', async (t) => {
      if (skip) return t.skip(skip);
      const task = tasks.get('c')!;
      const digest = async () => createHash('sha256').update(JSON.stringify([await listRefusalCounts(c.store, studyId), await entries(), await c.store.getTask(task.taskId)])).digest('hex');
      const before = await digest();
      // The audit append fails (the coordinator's key is unusable for a moment): nothing of the refusal may stay.
      const key = c.audit.key as { privateKey: unknown };
      const real = key.privateKey;
      key.privateKey = generateKeyPairSync('x25519').privateKey;
      try {
        const r = await call('POST', `/v1/agent/tasks/${enc(task.taskId)}/refuse`, { as: sc, json: { reason: 'local policy: no' } });
        assert.equal(r.status, 500, r.body);
      } finally {
        key.privateKey = real;
      }
      assert.equal(await digest(), before, 'a refusal whose transaction failed changed nothing');
      const answers = await Promise.all(Array.from({ length: 5 }, () => call('POST', `/v1/agent/tasks/${enc(task.taskId)}/refuse`, { as: sc, json: { reason: 'local policy: no' } })));
      assert.deepEqual(answers.map((a) => a.status).sort(), [200, 409, 409, 409, 409], answers.map((a) => a.body).join('\n'));
      const rows = (await listRefusalCounts(c.store, studyId)).filter((r) => r.taskId === task.taskId && r.code === 'site_refused');
      assert.deepEqual(rows.map((r) => r.count), [1]);
      assert.equal((await entries()).filter((e) => e.kind === 'update.refused' && e.subject === task.taskId && e.data.by === 'site').length, 1);
      assert.equal((await c.store.getTask(task.taskId))!.status, 'refused');
    });

    it('a placement refusal is audited in its transaction, and counted; a duplicate usage report is the primary key\'s call', async (t) => {
      if (skip) return t.skip(skip);
      const task = tasks.get('b')!;
      await ok('PUT', '/v1/agent/compute', { as: sb, json: { mode: 'placed', cpus: 64, ramGiB: 2 } }); // more than any resource has
      for (let i = 0; i < 4; i++) {
        const r = await call('POST', `/v1/agent/tasks/${enc(task.taskId)}/placement`, { as: sb, json: {} });
        assert.equal(r.status, 409, r.body);
        assert.equal(r.json.error, 'no_placement');
      }
      const audited = (await entries()).filter((e) => e.kind === 'placement.refused' && e.subject === task.taskId);
      assert.deepEqual(audited.map((e) => e.data.count), [1, 2, 4]);
      assert.match(audited[0]!.data.reason, /64/);
      assert.deepEqual((await listRefusalCounts(c.store, studyId)).filter((r) => r.taskId === task.taskId).map((r) => [r.code, r.count]), [['no_placement', 4]]);

      await ok('PUT', '/v1/agent/compute', { as: sb, json: { mode: 'placed', cpus: 2, ramGiB: 2 } });
      await ok('POST', `/v1/agent/tasks/${enc(task.taskId)}/placement`, { as: sb, json: {} });
      const usage = { resourceId: 'in-pool', scheduler: 'local', cpuSeconds: 1.5, gpuSeconds: 0, wallSeconds: 2, cpuBasis: 'measured', jobId: 'local-1' };
      assert.equal((await call('POST', `/v1/agent/tasks/${enc(task.taskId)}/usage`, { as: sb, json: usage })).status, 201);
      const recorded = JSON.stringify(await c.store.listUsage(studyId));
      const again = await call('POST', `/v1/agent/tasks/${enc(task.taskId)}/usage`, { as: sb, json: { ...usage, cpuSeconds: 99 } });
      assert.equal(again.status, 409, again.body);
      assert.match(again.json.message, /already recorded/);
      assert.equal(JSON.stringify(await c.store.listUsage(studyId)), recorded);
      // The store itself answers "already there" (false), whatever text the driver would have put in an error.
      const row = (await c.store.listUsage(studyId))[0]!;
      assert.equal(await c.store.addUsage({ ...row, cpuSeconds: 7 }), false);
    });

    it('a site admin revokes a linked site of their own institution, and not one of another', async (t) => {
      if (skip) return t.skip(skip);
      const sd = await site('s-d');
      await ok('POST', '/v1/institutions/kem/sites', { as: admin, json: { site: 's-d' } });
      const other = await call('POST', `/v1/sites/${sd.keyId}/revoke`, { as: cdacAdmin, json: {} });
      assert.equal(other.status, 403, other.body);
      const own = await call('POST', `/v1/sites/${sd.keyId}/revoke`, { as: kemAdmin, json: {} });
      assert.equal(own.status, 200, own.body);
      assert.equal((await entries()).filter((e) => e.kind === 'site.revoked' && e.subject === sd.keyId).length, 1);
    });

    it('GET /v1/audit pages by default, refuses a limit over the maximum naming it, and its pages add up to the log', async (t) => {
      if (skip) return t.skip(skip);
      const over = await call('GET', `/v1/audit?limit=${AUDIT_PAGE_MAX + 1}`, { as: admin });
      assert.equal(over.status, 400);
      assert.match(over.json.message, /limit must be between 1 and 10000/);
      const all = (await ok('GET', `/v1/audit?limit=${AUDIT_PAGE_MAX}`, { as: admin })).entries as { seq: number }[];
      const walked: { seq: number }[] = [];
      for (let after: number | null = 0; after !== null;) {
        const p: { entries: { seq: number }[]; next: number | null } = await ok('GET', `/v1/audit?after=${after}&limit=7`, { as: admin });
        walked.push(...p.entries);
        after = p.next;
      }
      assert.deepEqual(walked, all);
      if (backend === 'postgres') return; // the long log once is enough
      for (let i = all.length; i <= AUDIT_PAGE_DEFAULT; i++) await c.audit.append({ actor: 'coordinator', kind: 'invite.issued', subject: `filler-${i}` });
      const page = await ok('GET', '/v1/audit', { as: admin });
      assert.equal(page.entries.length, AUDIT_PAGE_DEFAULT);
      assert.ok(page.count > AUDIT_PAGE_DEFAULT);
      assert.equal(page.next, page.entries.at(-1).seq);
      assert.equal(checkpointProblem(page.checkpoint, c.audit.key.publicKeyRaw), null);
    });
  });
}
