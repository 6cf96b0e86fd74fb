/**
 * Failures are visible at once, on an in-process coordinator over HTTP (Fastify inject, signed like the agent):
 *  - POST /v1/agent/tasks/:id/error closes the task once, audited, on the live stream (SSE) and in the study detail;
 *    a bad code is refused listing the allowed ones, a second error is 409, another site's task is 403.
 *  - A round whose every site answered (an error, refusals) closes at once, honouring minSites, although its
 *    deadline is 600 s away: the study fails with a reason naming each site's answer (measured).
 *  - A SecAgg+ study that a withdrawal leaves with two participants stops with an audited, human reason.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCoordinator, type RunningCoordinator } from './start.js';
import { createLogger } from '../observability/logger.js';
import { enrolSite, enrolUser, heartStudy, inject, type Identity } from '../testing/inject.js';
import { waitFor } from '../testing/processes.js';
import { listAudit } from '../governance/audit-store.js';
import { TASK_ERROR_CODES } from '../protocol/task-errors.js';
import type { CoordinatorEvent } from './events.js';
import type { StudyDetail } from '../protocol/views.js';

describe('task errors and rounds that close when every site has answered', () => {
  let c: RunningCoordinator;
  let dir: string;
  let admin: Identity, lead: Identity;
  const sites: Record<string, Identity> = {};
  const events: CoordinatorEvent[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'setu-round-close-'));
    c = await startCoordinator({ dataDir: dir, port: 0, tickMs: 50, logger: createLogger({ level: 'silent' }) });
    c.bus.on((e) => events.push(e));
    admin = { keyId: c.adminKey!.keyId, privateKey: c.adminKey!.privateKey };
    lead = await enrolUser(c.app, admin, 'lead', 'study_lead');
    for (const n of ['a', 'b', 'c']) sites[n] = await enrolSite(c.app, admin, n);
  });
  after(async () => {
    await c?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const detail = async (id: string): Promise<StudyDetail> => (await inject(c.app, 'GET', `/v1/studies/${id}`, { as: lead })).json as StudyDetail;
  async function started(over: Record<string, unknown>): Promise<string> {
    const s = await inject(c.app, 'POST', '/v1/studies', { as: lead, json: { ...heartStudy('close', ['a', 'b', 'c']), ...over } });
    assert.equal(s.status, 200, s.body);
    const st = await inject(c.app, 'POST', `/v1/studies/${s.json.id}/start`, { as: lead, json: {} });
    assert.equal(st.status, 200, st.body);
    return s.json.id as string;
  }
  const taskOf = (site: string) =>
    waitFor(`a task for ${site}`, async () => {
      const r = await inject(c.app, 'GET', '/v1/agent/task?waitMs=500', { as: sites[site]! });
      return r.status === 200 ? (r.json as { taskId: string; round: number }) : undefined;
    }, 10_000, 20);

  it('a task error is recorded once, audited and shown; when every site has answered the round closes at once', async () => {
    const id = await started({ minSites: 2, roundTimeoutSeconds: 600 });
    const [ta, tb, tc] = [await taskOf('a'), await taskOf('b'), await taskOf('c')];
    const post = (site: string, taskId: string, json: unknown) => inject(c.app, 'POST', `/v1/agent/tasks/${encodeURIComponent(taskId)}/error`, { as: sites[site]!, json });

    const bad = await post('a', ta.taskId, { code: 'broken', message: 'x' });
    assert.equal(bad.status, 400);
    for (const code of TASK_ERROR_CODES) assert.ok(bad.body.includes(code), `the refusal lists ${code}: ${bad.body}`);
    assert.equal((await post('a', ta.taskId, { code: 'bad_data' })).status, 400, 'a message is required');
    assert.equal((await post('b', ta.taskId, { code: 'bad_data', message: 'not mine' })).status, 403, "another site's task");
    assert.equal((await detail(id)).taskErrors?.length ?? 0, 0, 'refused requests changed nothing');

    // The study lead's live stream (what the dashboard follows) carries the error as it happens.
    const tok = await inject(c.app, 'POST', '/v1/events/token', { as: lead, json: {} });
    const ac = new AbortController();
    const stream = await fetch(`${c.url}/v1/events?token=${encodeURIComponent(tok.json.token)}&study=${encodeURIComponent(id)}`, { signal: ac.signal });
    const reader = stream.body!.getReader();
    let sse = '';
    const streamed = (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return undefined;
        sse += new TextDecoder().decode(value);
        const m = /event: task\.failed\ndata: (.*)\n/.exec(sse);
        if (m) return JSON.parse(m[1]!) as { site: string; code: string; message: string; round: number };
      }
    })();
    await waitFor('the stream to open', async () => (sse.includes('event: ready') ? true : undefined), 5000, 10);
    const ok = await post('a', ta.taskId, { code: 'bad_data', message: 'cohort.csv: line 7, column 2: unterminated quoted field' });
    const ev = await streamed;
    await reader.cancel().catch(() => {});
    ac.abort();
    assert.deepEqual(ev && [ev.site, ev.code, ev.round, ev.message], ['a', 'bad_data', 1, 'cohort.csv: line 7, column 2: unterminated quoted field'], 'task.failed on the event stream');
    assert.equal(ok.status, 200, ok.body);
    assert.deepEqual(ok.json, { recorded: true, taskId: ta.taskId, status: 'failed' });
    const again = await post('a', ta.taskId, { code: 'other', message: 'again' });
    assert.equal(again.status, 409);
    assert.match(again.json.message, /is failed: only an open task .* takes an error, once/);

    const d = await detail(id);
    assert.deepEqual(d.taskErrors!.map((e) => [e.round, e.site, e.code, e.message]), [[1, 'a', 'bad_data', 'cohort.csv: line 7, column 2: unterminated quoted field']]);
    assert.deepEqual([d.openRound!.received, d.openRound!.failed, d.openRound!.refused, d.openRound!.expected], [0, 1, 0, 3]);
    assert.equal(d.status, 'running', 'b and c have not answered yet');
    assert.ok(events.some((e) => e.type === 'task.failed' && e.taskId === ta.taskId && e.site === 'a' && e.code === 'bad_data'), 'on the event stream');
    const audited = (await listAudit(c.store)).filter((e) => e.kind === 'task.failed');
    assert.equal(audited.length, 1);
    assert.deepEqual([audited[0]!.subject, (audited[0]!.data as { code: string }).code], [ta.taskId, 'bad_data']);
    // The failed task is not delivered again.
    assert.equal((await inject(c.app, 'GET', '/v1/agent/task?waitMs=0', { as: sites['a']! })).status, 204);

    // b and c refuse: every site has answered, no result reached minSites 2, and the round does not wait 600 s.
    assert.equal((await inject(c.app, 'POST', `/v1/agent/tasks/${encodeURIComponent(tb.taskId)}/refuse`, { as: sites['b']!, json: { reason: 'local policy: min-examples' } })).status, 200);
    const t0 = Date.now();
    assert.equal((await inject(c.app, 'POST', `/v1/agent/tasks/${encodeURIComponent(tc.taskId)}/refuse`, { as: sites['c']!, json: { reason: 'local policy: min-examples' } })).status, 200);
    const failed = await waitFor('the study to fail', async () => ((await detail(id)).status === 'failed' ? detail(id) : undefined), 10_000, 10);
    const ms = Date.now() - t0;
    console.log(`# all sites answered without a result: the round closed ${ms} ms after the last answer (deadline 600 s)`);
    assert.ok(ms < 5000, `closed in ${ms} ms`);
    assert.match(failed.error!, /^round 1: 0 of 3 sites reported a result; at least 2 needed \(minSites 2\): a could not run its task \(bad_data\): cohort\.csv: line 7, column 2: unterminated quoted field; b refused: local policy: min-examples; c refused: local policy: min-examples$/);
    const stopped = (await listAudit(c.store)).filter((e) => e.kind === 'study.stopped' && e.subject === id);
    assert.equal(stopped.length, 1, 'the failure is audited');
    assert.match((stopped[0]!.data as { reason: string }).reason, /^failed: round 1: 0 of 3 sites reported a result/);
  });
});

describe('SecAgg+ below three participants after a withdrawal', () => {
  it('stops the study before its next fit round, with an audited reason naming who left and who remains', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'setu-secagg-three-'));
    const c = await startCoordinator({ dataDir: dir, port: 0, tickMs: 50, logger: createLogger({ level: 'silent' }) });
    try {
      const admin = { keyId: c.adminKey!.keyId, privateKey: c.adminKey!.privateKey };
      assert.equal((await inject(c.app, 'POST', '/v1/institutions', { as: admin, json: { id: 'osaka', name: 'Osaka UH', kind: 'hospital', jurisdiction: 'JP' } })).status, 201);
      const names = ['s1', 's2', 's3'];
      for (const n of names) {
        const inv = await inject(c.app, 'POST', '/v1/invites', { as: admin, json: { siteName: n, institution: 'osaka', jurisdiction: 'JP' } });
        assert.equal(inv.status, 200, inv.body);
        const { generateSigningKeys } = await import('../protocol/signing.js');
        const e = await inject(c.app, 'POST', '/v1/enrol', { json: { token: inv.json.token, publicKey: generateSigningKeys().publicKeyRaw, cohorts: { heart: 150 } } });
        assert.equal(e.status, 200, e.body);
      }
      const lead = await enrolUser(c.app, admin, 'lead', 'study_lead');
      const inv = await inject(c.app, 'POST', '/v1/users', { as: admin, json: { name: 'adm', role: 'site_admin', institution: 'osaka' } });
      const { generateSigningKeys } = await import('../protocol/signing.js');
      const k = generateSigningKeys();
      assert.equal((await inject(c.app, 'POST', '/v1/users/enrol', { json: { token: inv.json.token, publicKey: k.publicKeyRaw } })).status, 200);
      const siteAdmin = { keyId: inv.json.userId as string, privateKey: k.privateKeyPem };
      const s = await inject(c.app, 'POST', '/v1/studies', { as: lead, json: { ...heartStudy('secagg three', names, 3), fit: { localSteps: 10, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.1 } }, privacy: { secagg: {} }, roundTimeoutSeconds: 600 } });
      assert.equal(s.status, 200, s.body);
      const id = s.json.id as string;
      assert.equal((await inject(c.app, 'POST', `/v1/studies/${id}/propose`, { as: lead, json: {} })).status, 200);
      for (const n of names) assert.equal((await inject(c.app, 'POST', `/v1/studies/${id}/approve`, { as: siteAdmin, json: { site: n, terms: { purpose: 'heart research' } } })).status, 200);
      // The withdrawal lands between rounds: the engine is paused so no round is open when it does.
      await c.engine.stop();
      const st = await inject(c.app, 'POST', `/v1/studies/${id}/start`, { as: lead, json: {} });
      assert.equal(st.status, 200, st.body);
      const w = await inject(c.app, 'POST', `/v1/studies/${id}/withdraw`, { as: siteAdmin, json: { site: 's3', reason: 'our ethics board withdrew consent' } });
      assert.equal(w.status, 200, w.body);
      c.engine.start();
      const d = await waitFor('the study to stop', async () => {
        const x = (await inject(c.app, 'GET', `/v1/studies/${id}`, { as: lead })).json as StudyDetail;
        return x.status === 'stopped' ? x : undefined;
      }, 10_000, 20);
      assert.equal(d.error, 'SecAgg+ needs at least 3 participants: s3 withdrew ("our ethics board withdrew consent"), and 2 remain (s1, s2). With fewer than three the masked sum would reveal each site\'s update to the others, so the study stopped before round 1');
      assert.doesNotMatch(d.error!, /degree must be an integer/);
      assert.equal((await c.store.listRounds(id)).length, 0, 'no round was opened');
      const audit = (await listAudit(c.store)).filter((e) => e.kind === 'study.stopped');
      assert.equal(audit.length, 1);
      assert.equal((audit[0]!.data as { reason: string }).reason, d.error);
      const gov = (await inject(c.app, 'GET', `/v1/studies/${id}/governance`, { as: lead })).json as { state: string; stopReason?: string };
      assert.equal(gov.state, 'stopped');
    } finally {
      await c.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
