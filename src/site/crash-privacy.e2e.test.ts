/**
 * A crash at a site never costs privacy twice (issue 10). A DP-SGD study whose ε budget is exactly what its rounds
 * cost (the site's cap is the study's target, σ planned to reach it at the last round, so one charge more is
 * refused) runs while its agents are SIGKILLed at random moments, mid-training among them, and restarted. Against
 * an uninterrupted run of the very same federation (the same coordinator store, site keys and noise secrets,
 * copied before either run starts): the study completes, every site's ledger holds one charge per task, every
 * release a site made (its release log, digests of the tensors) and every round's model are identical, and the
 * coordinator's privacy ledger says the same.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCoordinator, type RunningCoordinator } from '../coordinator/start.js';
import { freePort, waitFor } from '../testing/processes.js';
import { exited, setUpFederation, startAgent, stopAgents, type Agent, type StudyDetail as Detail } from '../testing/agents.js';
import { HttpClient } from './http.js';
import { SiteState } from './state.js';
import { BUDGET_FILE } from './privacy.js';
import { releaseLog, tensorDigest } from './release.js';
import type { PrivacyBudgetJSON } from '../privacy/budget.js';

const SITES = 3;
const ROUNDS = 8;
const KILLS = 12;

const SPEC = {
  name: 'crash dp',
  dataset: 'heart',
  model: { kind: 'logistic', inputDim: 13 },
  strategy: { name: 'FedAvg' },
  rounds: ROUNDS,
  // Long enough local training that a random kill often lands inside it.
  fit: { localSteps: 4000, batchSize: 8, optimizer: { kind: 'sgd', lr: 0.05 } },
  minSites: SITES,
  // A killed agent is back within seconds; the round waits for it (a deadline would change the model).
  roundTimeoutSeconds: 600,
  seed: 11,
  privacy: { dp: { level: 'sample', epsilon: 1, delta: 1e-3, clipNorm: 1 } },
};

interface Outcome {
  detail: Detail;
  models: Map<number, string>;
  releases: Map<string, string>;
  charges: string[][];
  coordinatorLedger: unknown;
  kills: number;
  midTraining: number;
  retrained: number;
}

async function runWorld(root: string, port: number, studyId: string, leadKey: { keyId: string; privateKey: string }, kill: boolean): Promise<Outcome> {
  let c: RunningCoordinator | undefined;
  const agents: Agent[] = [];
  const lines: string[][] = Array.from({ length: SITES }, () => []);
  let kills = 0, midTraining = 0;
  try {
    c = await startCoordinator({ dataDir: join(root, 'coord'), port, tickMs: 50 });
    const lead = new HttpClient({ baseUrl: c.url, signer: leadKey, giveUpAfterMs: 20_000 });
    for (let k = 0; k < SITES; k++) agents.push(startAgent(`hospital-${k}`, join(root, `site-${k}`), lines[k]));
    // Where each agent process's own lines begin (the array is shared across its restarts).
    const since = agents.map(() => 0);
    await lead.json('POST', `/v1/studies/${studyId}/start`, {});
    const status = () => lead.json<Detail>('GET', `/v1/studies/${studyId}`);
    // A site refusing a task (its budget spent by a double charge) ends the wait too: the round would wait out its deadline.
    const ended = (s: Detail) => ['completed', 'failed', 'stopped'].includes(s.status) || s.refusals.length > 0;
    if (kill) {
      // Random kills until KILLS have landed: half of them while the agent trains (its last line says so), the rest
      // at a random moment (polling, uploading, starting up).
      for (let attempt = 0; kills < KILLS && attempt < 200; attempt++) {
        if (ended(await status())) break;
        const k = Math.floor(Math.random() * SITES);
        const a = agents[k]!;
        if (Math.random() < 0.5) {
          const from = a.lines.length;
          const training = await waitFor('the agent to train', async () => (a.lines.slice(from).some((l) => /task \S+: training \(/.test(l)) ? true : (ended(await status()) ? false : undefined)), 60_000, 20);
          if (!training) break;
          await new Promise((r) => setTimeout(r, Math.random() * 150));
        } else {
          // Within a round or so of a fast machine (the study's 8 rounds took 8-16 s here): a longer wait let a quick
          // study end after 8 of the 12 planned kills in one of 13 runs here (CI failed this test once; its log lacks the assertion).
          await new Promise((r) => setTimeout(r, 50 + Math.random() * 750));
        }
        a.child.kill('SIGKILL');
        await exited(a.child);
        // Every line it wrote before it died has been read.
        await Promise.all([a.child.stdout!, a.child.stderr!].map((st) => (st.closed ? undefined : new Promise((r) => st.once('close', r)))));
        kills++;
        // Killed inside training: its last task line is "training" with no "done" after it.
        const taskLines = a.lines.slice(since[k]).filter((l) => /task \S+: /.test(l));
        if (/: training \(/.test(taskLines[taskLines.length - 1] ?? '')) midTraining++;
        since[k] = a.lines.length;
        agents[k] = startAgent(a.name, a.dir, a.lines);
      }
    }
    const detail = await waitFor('the study to end', async () => {
      const s = await status();
      return ended(s) ? s : undefined;
    }, 300_000, 100);
    const models = new Map<number, string>();
    for (let r = 0; r <= ROUNDS; r++) models.set(r, tensorDigest((await lead.request('GET', `/v1/studies/${studyId}/model?round=${r}`)).body));
    const coordinatorLedger = await lead.json<unknown>('GET', `/v1/studies/${studyId}/privacy?entries=1`);
    await stopAgents(agents);
    const releases = new Map<string, string>();
    const charges: string[][] = [];
    let retrained = 0;
    for (let k = 0; k < SITES; k++) {
      const state = new SiteState(join(root, `site-${k}`, 'state'));
      for (const r of releaseLog(state, studyId)) {
        const seen = releases.get(r.taskId);
        assert.ok(seen === undefined || seen === r.digest, `task ${r.taskId} released two different updates`);
        releases.set(r.taskId, r.digest);
      }
      const budget = state.readJson<PrivacyBudgetJSON>(studyId, BUDGET_FILE)!;
      charges.push(budget.history.map((h) => h.label));
      const starts = new Map<string, number>();
      for (const l of lines[k]!) {
        const m = /task (\S+): training \(/.exec(l);
        if (m) starts.set(m[1]!, (starts.get(m[1]!) ?? 0) + 1);
      }
      retrained += [...starts.values()].filter((n) => n > 1).length;
    }
    return { detail, models, releases, charges, coordinatorLedger, kills, midTraining, retrained };
  } finally {
    await stopAgents(agents);
    await c?.close();
  }
}

test('agents SIGKILLed at random moments: each DP task charged once, releases and models identical to an uninterrupted run', { timeout: 900_000 }, async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'setu-crash-dp-'));
  try {
    const port = await freePort();
    const { studyId, leadKey } = await setUpFederation(join(root, 'a'), port, [0, 1, 2], SPEC);
    // The same federation twice: the coordinator's store, the sites' keys, credentials and noise secrets.
    cpSync(join(root, 'a'), join(root, 'b'), { recursive: true });
    const clean = await runWorld(join(root, 'a'), port, studyId, leadKey, false);
    assert.equal(clean.detail.status, 'completed', clean.detail.error ?? '');
    const crashed = await runWorld(join(root, 'b'), port, studyId, leadKey, true);
    assert.deepEqual(crashed.detail.refusals, [], 'no site refused a task (a double charge would exhaust its budget)');
    assert.equal(crashed.detail.status, 'completed', crashed.detail.error ?? '');
    // KILLS are planned; a fast or a loaded machine can finish the study after fewer, which still proves the point
    // when at least half landed (each one a restart that must neither charge nor release anything new).
    assert.ok(crashed.kills >= KILLS / 2, `${crashed.kills} kills of ${KILLS} planned before the study ended`);
    assert.ok(crashed.midTraining >= 1, `${crashed.midTraining} of the kills landed mid-training`);
    assert.ok(crashed.retrained >= 1, `${crashed.retrained} tasks trained again after a kill`);
    for (let k = 0; k < SITES; k++) {
      const labels = crashed.charges[k]!;
      assert.equal(labels.length, ROUNDS, `site ${k}: one charge per round (${labels.join(', ')})`);
      assert.equal(new Set(labels).size, ROUNDS, `site ${k}: no task charged twice`);
      assert.deepEqual(labels, clean.charges[k], `site ${k}: the same charges as the uninterrupted run`);
    }
    assert.equal(crashed.releases.size, SITES * ROUNDS, 'one release per task');
    assert.deepEqual([...crashed.releases.entries()].sort(), [...clean.releases.entries()].sort(), 'every release identical to the uninterrupted run');
    assert.deepEqual([...crashed.models.entries()], [...clean.models.entries()], 'every round\'s model identical to the uninterrupted run');
    assert.deepEqual(stripTimes(crashed.coordinatorLedger), stripTimes(clean.coordinatorLedger), "the coordinator's privacy ledger says the same");
    t.diagnostic(`${crashed.kills} kills, ${crashed.midTraining} mid-training, ${crashed.retrained} tasks trained again after a kill`);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

/** The ledger without its timestamps (the two runs happened at different times). */
function stripTimes(v: unknown): unknown {
  return JSON.parse(JSON.stringify(v, (k, x) => (/^(at|ts|recordedAt|createdAt|updatedAt)$/.test(k) || /At$/.test(k) ? undefined : x)));
}
