/**
 * A restarted SecAgg+ round is the same round (issue 10). The coordinator dies after sites have finished round 1's
 * last SecAgg+ stage (their update sent, masked, and their unmask answer given; their batch stream moved on), before
 * it commits the round. Restarted, it restarts the round and asks them again: each sends the update it kept for
 * that round (no training, no privacy spend), so every round's model equals an uninterrupted run's, and each site's
 * account holds one charge per round. The uninterrupted run is the same federation, copied before either started.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCoordinator, type RunningCoordinator } from '../coordinator/start.js';
import { freePort, waitFor } from '../testing/processes.js';
import { setUpFederation, startAgent, stopAgents, type Agent, type Federation, type StudyDetail } from '../testing/agents.js';
import { HttpClient } from './http.js';
import { SiteState } from './state.js';
import { BUDGET_FILE } from './privacy.js';
import { releaseLog, tensorDigest } from './release.js';
import type { PrivacyBudgetJSON } from '../privacy/budget.js';

const ROUNDS = 2;
const SPEC = {
  name: 'secagg resubmit', dataset: 'heart', model: { kind: 'logistic', inputDim: 13 }, strategy: { name: 'FedAvg' }, rounds: ROUNDS,
  fit: { localSteps: 20, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.05 } }, minSites: 4, roundTimeoutSeconds: 120, seed: 13,
  // Client-level DP-FedAvg with distributed noise: each site trains on its batch stream (which moves on once the
  // round is answered), then clips and noises its update.
  privacy: { dp: { level: 'client', epsilon: 8, delta: 1e-3, clipNorm: 0.5, mode: 'distributed' }, secagg: { stageTimeoutSeconds: 10 } },
};

interface Outcome { models: string[]; releases: Map<string, string>; charges: string[][]; resent: number; detail: StudyDetail }

/** A site has finished round 1: its queue is empty and it kept the round's release. */
function finishedRound1(a: Agent, studyId: string): boolean {
  const state = join(a.dir, 'state');
  const pending = join(state, 'pending');
  return existsSync(join(state, 'studies', studyId, 'releases', 'r1.json')) && (!existsSync(pending) || readdirSync(pending).length === 0);
}

async function runWorld(root: string, port: number, f: Federation, crash: boolean): Promise<Outcome> {
  let c: RunningCoordinator | undefined;
  const agents: Agent[] = [];
  try {
    c = await startCoordinator({ dataDir: join(root, 'coord'), port, tickMs: 50, maxWaitMs: 2000 });
    const lead = new HttpClient({ baseUrl: c.url, signer: f.leadKey, giveUpAfterMs: 20_000 });
    for (const s of f.sites) agents.push(startAgent(s.name, join(root, s.rel)));
    if (crash) {
      // The engine stops at round 1's first masked input: the stages go on over HTTP, but nothing commits the round.
      const first = c;
      let stopped: Promise<void> | undefined;
      first.bus.on((e) => {
        if (!stopped && e.type === 'update.accepted' && e.studyId === f.studyId && e.round === 1) stopped = first.engine.stop();
      });
      await lead.json('POST', `/v1/studies/${f.studyId}/start`, {});
      await waitFor('a site to finish round 1', async () => (stopped && agents.some((a) => finishedRound1(a, f.studyId)) ? true : undefined), 60_000, 20);
      await stopped;
      // Then the coordinator dies: connections cut, nothing beyond what SQL committed.
      first.app.server.closeAllConnections();
      await first.app.close();
      await first.store.close();
      c = await startCoordinator({ dataDir: join(root, 'coord'), port, tickMs: 50, maxWaitMs: 2000 });
    } else {
      await lead.json('POST', `/v1/studies/${f.studyId}/start`, {});
    }
    const detail = await waitFor('the study to end', async () => {
      const s = await lead.json<StudyDetail>('GET', `/v1/studies/${f.studyId}`);
      return ['completed', 'failed', 'stopped'].includes(s.status) ? s : undefined;
    }, 120_000, 100);
    const models: string[] = [];
    for (let r = 0; r <= ROUNDS; r++) models.push(tensorDigest((await lead.request('GET', `/v1/studies/${f.studyId}/model?round=${r}`)).body));
    await stopAgents(agents);
    const releases = new Map<string, string>();
    const charges: string[][] = [];
    for (const a of agents) {
      const state = new SiteState(join(a.dir, 'state'));
      for (const r of releaseLog(state, f.studyId)) {
        assert.ok(!releases.has(r.taskId) || releases.get(r.taskId) === r.digest, `task ${r.taskId} released two different updates (${crash ? 'restarted' : 'uninterrupted'} run):\n${a.lines.join('\n')}`);
        releases.set(r.taskId, r.digest);
      }
      charges.push(state.readJson<PrivacyBudgetJSON>(f.studyId, BUDGET_FILE)!.history.map((h) => h.label));
    }
    const resent = agents.filter((a) => a.lines.some((l) => /round 1 was answered already; sending the same update again/.test(l))).length;
    return { models, releases, charges, resent, detail };
  } finally {
    await stopAgents(agents);
    await c?.close().catch(() => {});
  }
}

test('a coordinator restarted after sites finished a SecAgg+ round: they resend the same update, the model is an uninterrupted run\'s', { timeout: 300_000 }, async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'setu-secagg-resubmit-'));
  try {
    const port = await freePort();
    const f = await setUpFederation(join(root, 'a'), port, [0, 1, 2, 3], SPEC);
    cpSync(join(root, 'a'), join(root, 'b'), { recursive: true });
    const clean = await runWorld(join(root, 'a'), port, f, false);
    assert.equal(clean.detail.status, 'completed', clean.detail.error ?? '');
    const crashed = await runWorld(join(root, 'b'), port, f, true);
    assert.equal(crashed.detail.status, 'completed', crashed.detail.error ?? '');
    assert.deepEqual(crashed.models, clean.models, "every round's model equals the uninterrupted run's");
    assert.deepEqual([...crashed.releases.entries()].sort(), [...clean.releases.entries()].sort(), 'the same releases, one per task');
    for (const [k, labels] of crashed.charges.entries()) {
      assert.equal(labels.length, ROUNDS, `site ${k}: one charge per round (${labels.join(', ')})`);
      assert.deepEqual(labels, clean.charges[k]);
    }
    assert.ok(crashed.resent >= 1, 'at least one site had finished round 1 and sent its kept update again');
    t.diagnostic(`${crashed.resent} of 4 sites had finished round 1 before the crash and resent their update`);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
