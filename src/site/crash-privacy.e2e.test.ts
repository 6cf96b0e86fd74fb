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
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import YAML from 'yaml';
import { startCoordinator, type RunningCoordinator } from '../coordinator/start.js';
import { SETU_MAIN, adminOf, freePort, waitFor } from '../testing/processes.js';
import { HttpClient } from './http.js';
import { generateSigningKeys } from '../protocol/signing.js';
import { SiteState } from './state.js';
import { BUDGET_FILE } from './privacy.js';
import { releaseLog, tensorDigest } from './release.js';
import type { PrivacyBudgetJSON } from '../privacy/budget.js';

const SITES = 3;
const ROUNDS = 8;
const KILLS = 12;

interface Agent {
  name: string;
  dir: string;
  child: ChildProcess;
  lines: string[];
}

function startAgent(name: string, dir: string, lines: string[] = []): Agent {
  const child = spawn(process.execPath, [SETU_MAIN, 'site', 'start', '--config', join(dir, 'site.yaml')], { stdio: ['ignore', 'pipe', 'pipe'] });
  const a: Agent = { name, dir, child, lines };
  let buf = '';
  const feed = (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  };
  child.stdout!.on('data', feed);
  child.stderr!.on('data', feed);
  return a;
}

const exited = (c: ChildProcess) => (c.exitCode !== null || c.signalCode !== null ? Promise.resolve() : new Promise<void>((r) => c.once('exit', () => r())));

async function stop(agents: Agent[]): Promise<void> {
  await Promise.all(agents.map(async (a) => {
    if (a.child.exitCode === null && a.child.signalCode === null) a.child.kill('SIGTERM');
    await exited(a.child);
  }));
}

function run(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [SETU_MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (out += d.toString()));
    c.once('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`setu ${args.join(' ')} exited ${code}: ${out}`))));
  });
}

type Detail = { status: string; error: string | null; round: number; refusals: { round: number; site: string | null; reason: string }[] };

/** The federation, enrolled and with its study created but not started; everything on disk under `root`. */
async function setUp(root: string, port: number): Promise<{ studyId: string; leadKey: { keyId: string; privateKey: string } }> {
  const c = await startCoordinator({ dataDir: join(root, 'coord'), port, tickMs: 50 });
  try {
    const admin = adminOf(c);
    for (let k = 0; k < SITES; k++) {
      const dir = join(root, `site-${k}`);
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'site.yaml'), YAML.stringify({ coordinator: c.url, stateDir: 'state', pollWaitMs: 2000, datasets: { heart: { format: 'fed-heart-disease', center: k } } }));
      const inv = await admin.json<{ token: string }>('POST', '/v1/invites', { siteName: `hospital-${k}` });
      await run(['site', 'enrol', '--config', join(dir, 'site.yaml'), '--token', inv.token]);
    }
    // The lead's key is made here, so both runs can sign as the same lead.
    const inv = await admin.json<{ token: string; userId: string }>('POST', '/v1/users', { name: 'lead', role: 'study_lead', ttlHours: 1 });
    const keys = generateSigningKeys();
    await new HttpClient({ baseUrl: c.url, giveUpAfterMs: 20_000 }).json('POST', '/v1/users/enrol', { token: inv.token, publicKey: keys.publicKeyRaw });
    const leadKey = { keyId: inv.userId, privateKey: keys.privateKeyPem };
    const lead = new HttpClient({ baseUrl: c.url, signer: leadKey, giveUpAfterMs: 20_000 });
    const { id } = await lead.json<{ id: string }>('POST', '/v1/studies', {
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
    });
    return { studyId: id, leadKey };
  } finally {
    await c.close();
  }
}

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
          await new Promise((r) => setTimeout(r, 100 + Math.random() * 1500));
        }
        a.child.kill('SIGKILL');
        await exited(a.child);
        kills++;
        // Killed inside training: its last task line is "training" with no "done" after it.
        const taskLines = a.lines.filter((l) => /task \S+: /.test(l));
        if (/: training \(/.test(taskLines[taskLines.length - 1] ?? '')) midTraining++;
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
    await stop(agents);
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
    await stop(agents);
    await c?.close();
  }
}

test('agents SIGKILLed at random moments: each DP task charged once, releases and models identical to an uninterrupted run', { timeout: 900_000 }, async () => {
  const root = mkdtempSync(join(tmpdir(), 'setu-crash-dp-'));
  try {
    const port = await freePort();
    const { studyId, leadKey } = await setUp(join(root, 'a'), port);
    // The same federation twice: the coordinator's store, the sites' keys, credentials and noise secrets.
    cpSync(join(root, 'a'), join(root, 'b'), { recursive: true });
    const clean = await runWorld(join(root, 'a'), port, studyId, leadKey, false);
    assert.equal(clean.detail.status, 'completed', clean.detail.error ?? '');
    const crashed = await runWorld(join(root, 'b'), port, studyId, leadKey, true);
    assert.deepEqual(crashed.detail.refusals, [], 'no site refused a task (a double charge would exhaust its budget)');
    assert.equal(crashed.detail.status, 'completed', crashed.detail.error ?? '');
    assert.ok(crashed.kills >= KILLS, `${crashed.kills} kills`);
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
    process.stderr.write(`crash-privacy: ${crashed.kills} kills, ${crashed.midTraining} mid-training, ${crashed.retrained} tasks retrained\n`);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

/** The ledger without its timestamps (the two runs happened at different times). */
function stripTimes(v: unknown): unknown {
  return JSON.parse(JSON.stringify(v, (k, x) => (/^(at|ts|recordedAt|createdAt|updatedAt)$/.test(k) || /At$/.test(k) ? undefined : x)));
}
