/**
 * Compute usage of a task whose agent was killed after queuing its result is not lost (issue 10): the usage
 * travels inside the queued result's metadata (`ResultMeta.usage`; a SecAgg+ result's waits beside it in the
 * pending queue and goes first, POST …/usage) and is sent again with it after a restart; the coordinator records
 * it once. A proxy between the agent and the coordinator holds the agent's first result upload and the agent is
 * SIGKILLed while it waits, so the kill lands exactly after the result was queued and before the coordinator knew
 * the usage.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCoordinator, type RunningCoordinator } from '../coordinator/start.js';
import { adminOf, freePort, waitFor } from '../testing/processes.js';
import { exited, setUpFederation, startAgent, stopAgents, type Agent, type StudyDetail } from '../testing/agents.js';
import { HttpClient } from './http.js';

/** Forwards every request to `target`, except that while `hold` says so a matching request is kept waiting (never answered). */
function proxy(port: number, target: number, hold: (req: http.IncomingMessage) => boolean): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    if (hold(req)) return; // left hanging: the agent waits for an answer that never comes
    const up = http.request({ host: '127.0.0.1', port: target, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve(server)));
}

test('an agent killed after queuing its result reports the task\'s compute usage after a restart, once', { timeout: 180_000 }, async () => {
  const root = mkdtempSync(join(tmpdir(), 'setu-usage-'));
  let c: RunningCoordinator | undefined;
  let p: http.Server | undefined;
  const agents: Agent[] = [];
  try {
    // The federation is set up on the proxy's port: the sites' configs name the proxy as their coordinator.
    const proxyPort = await freePort();
    const f = await setUpFederation(root, proxyPort, [0], {
      name: 'usage', dataset: 'heart', model: { kind: 'logistic', inputDim: 13 }, strategy: { name: 'FedAvg' }, rounds: 2,
      fit: { localSteps: 20, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.05 } }, minSites: 1, roundTimeoutSeconds: 120, seed: 3,
    });
    const coordPort = await freePort();
    c = await startCoordinator({ dataDir: join(root, 'coord'), port: coordPort, tickMs: 50, maxWaitMs: 2000 });
    let held: string | undefined;
    let holding = true;
    p = await proxy(proxyPort, coordPort, (req) => {
      const m = /^\/v1\/agent\/tasks\/([^/]+)\/(?:usage|result)$/.exec(req.url ?? '');
      if (!m || !holding) return false;
      held = decodeURIComponent(m[1]!);
      return true;
    });
    const lines: string[] = [];
    const site = f.sites[0]!;
    agents.push(startAgent(site.name, join(root, site.rel), lines));
    const lead = new HttpClient({ baseUrl: c.url, signer: f.leadKey, giveUpAfterMs: 20_000 });
    await lead.json('POST', `/v1/studies/${f.studyId}/start`, {});
    const taskId = await waitFor('the agent to send its first result and usage', async () => held, 60_000, 10);
    agents[0]!.child.kill('SIGKILL');
    await exited(agents[0]!.child);
    holding = false;
    const admin = adminOf(c);
    const usage = async () => (await admin.json<{ records: { taskId: string }[] }>('GET', `/v1/compute/usage?study=${encodeURIComponent(f.studyId)}`)).records;
    assert.deepEqual((await usage()).filter((r) => r.taskId === taskId), [], 'the coordinator has not recorded it: the kill came first');
    agents.push(startAgent(site.name, join(root, site.rel), lines));
    const done = await waitFor('the study to end', async () => {
      const s = await lead.json<StudyDetail>('GET', `/v1/studies/${f.studyId}`);
      return ['completed', 'failed', 'stopped'].includes(s.status) ? s : undefined;
    }, 120_000, 100);
    assert.equal(done.status, 'completed', done.error ?? '');
    const records = await usage();
    assert.equal(records.filter((r) => r.taskId === taskId).length, 1, `the usage of ${taskId} was sent after the restart, once`);
    const tasks = new Set(records.map((r) => r.taskId));
    assert.equal(records.length, tasks.size, 'no task recorded twice');
    assert.equal(tasks.size, 3, 'both fit rounds and the final evaluation have their usage');
  } finally {
    await stopAgents(agents);
    await c?.close().catch(() => {});
    p?.closeAllConnections();
    await new Promise((r) => (p ? p.close(r) : r(undefined)));
    rmSync(root, { recursive: true, force: true });
  }
});
