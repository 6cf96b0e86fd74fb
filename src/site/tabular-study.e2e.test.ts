/**
 * A study over any tabular data, end to end with real agent processes: the study declares a data
 * schema, each site points its config at its own CSV file. A site whose file does not match makes
 * the study refuse to start with a message naming the site and the column. With matching files the
 * study runs with federated (global) normalisation, one site training through an external Python
 * trainer, and learns the signal in the data.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import YAML from 'yaml';
import { startCoordinator, type RunningCoordinator } from '../coordinator/start.js';
import { createRng } from '../learning/rng.js';
import { adminOf, studyLeadClient, runSetu, stopAll, waitFor } from '../testing/processes.js';

const TRAINER = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'examples', 'trainers', 'logistic_trainer.py');

/** Synthetic cohort: outcome depends on age, blood pressure and smoking; sites differ in their mix. */
function cohortCsv(seed: number, n: number, shift: number, columns = ['age', 'bp', 'smoker', 'outcome', 'set']): string {
  const rng = createRng(seed, 'cohort');
  const rows = [columns.join(',')];
  for (let i = 0; i < n; i++) {
    const age = 40 + 15 * rng.normal() + shift * 5;
    const bp = 130 + 20 * rng.normal() + shift * 8;
    const smoker = rng.next() < 0.3 + 0.1 * shift ? 'yes' : 'no';
    const z = 0.06 * (age - 45) + 0.04 * (bp - 135) + (smoker === 'yes' ? 1.2 : 0) - 0.3;
    const outcome = rng.next() < 1 / (1 + Math.exp(-z)) ? 1 : 0;
    const set = i % 3 === 0 ? 'test' : 'train';
    const row: Record<string, string | number> = { age: age.toFixed(1), bp: bp.toFixed(0), smoker, outcome, set };
    rows.push(columns.map((c) => row[c]).join(','));
  }
  return rows.join('\n') + '\n';
}

const schema = {
  features: [
    { name: 'age', type: 'numeric' },
    { name: 'bp', type: 'numeric' },
    { name: 'smoker', type: 'categorical', levels: ['no', 'yes'], dropFirst: true },
  ],
  task: { kind: 'binary', label: 'outcome' },
  preprocessing: { normalise: 'global', scope: 'numeric' },
  split: { kind: 'column', column: 'set', train: 'train', test: 'test' },
};

function study(name: string, sites: string[]) {
  return {
    name,
    dataset: 'cohort',
    dataSchema: schema,
    model: { kind: 'logistic', inputDim: 3 },
    strategy: { name: 'FedAvg' },
    rounds: 8,
    fit: { localSteps: 40, batchSize: 8, optimizer: { kind: 'sgd', lr: 0.1 } },
    sites,
    roundTimeoutSeconds: 60,
    seed: 3,
  };
}

test('tabular studies: schema mismatch refused by site and column; global normalisation and an external trainer', { timeout: 180_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-tabular-'));
  const children: ChildProcess[] = [];
  let c: RunningCoordinator | undefined;
  try {
    c = await startCoordinator({ dataDir: join(dir, 'coord'), port: 0, tickMs: 50 });
    const client = adminOf(c);
    const admin = <T>(method: string, path: string, body?: unknown): Promise<T> => client.json<T>(method, path, body);
    // Studies are written and started by a study lead.
    const leadClient = await studyLeadClient(client, c.url);
    const lead = <T>(method: string, path: string, body?: unknown): Promise<T> => leadClient.json<T>(method, path, body);
    const sites: [string, string, boolean][] = [
      ['alpha', cohortCsv(1, 600, 0), false],
      ['beta', cohortCsv(2, 450, 1), false],
      ['gamma', cohortCsv(3, 300, -1), true], // trains through the external Python trainer
      ['delta', cohortCsv(4, 200, 0, ['age', 'smoker', 'outcome', 'set']), false], // has no bp column
    ];
    for (const [name, csv, external] of sites) {
      const siteDir = join(dir, name);
      mkdirSync(siteDir, { recursive: true });
      writeFileSync(join(siteDir, 'cohort.csv'), csv);
      writeFileSync(
        join(siteDir, 'site.yaml'),
        YAML.stringify({
          coordinator: c.url,
          pollWaitMs: 5000,
          datasets: { cohort: { format: 'csv', path: 'cohort.csv' } },
          ...(external ? { trainer: { kind: 'external', command: ['python3', TRAINER], timeoutSeconds: 60, models: ['logistic'] } } : {}),
        }),
      );
      const inv = await admin<{ token: string }>('POST', '/v1/invites', { siteName: name });
      children.push(runSetu(['site', 'start', '--config', join(siteDir, 'site.yaml'), '--token', inv.token], join(siteDir, 'agent.log')));
    }
    await waitFor('4 sites', async () => ((await admin<unknown[]>('GET', '/v1/sites')).length === 4 ? true : undefined), 30_000);

    const finished = (id: string) =>
      waitFor(`study ${id} to end`, async () => {
        const s = await admin<{ status: string; error: string | null; metrics: { round: number; site: string | null; phase: string; name: string; value: number }[] }>('GET', `/v1/studies/${id}`);
        return ['completed', 'failed', 'stopped'].includes(s.status) ? s : undefined;
      }, 120_000);

    // 1. delta's file lacks a column: the study refuses to start, naming the site and the column.
    const bad = await lead<{ id: string }>('POST', '/v1/studies', study('mismatch', ['alpha', 'delta']));
    await lead('POST', `/v1/studies/${bad.id}/start`, {});
    const refused = await finished(bad.id);
    assert.equal(refused.status, 'failed');
    assert.match(refused.error!, /site delta: column "bp"/);
    assert.doesNotMatch(refused.error!, /site alpha/, 'the matching site is not blamed');
    assert.equal((await c.store.listRounds(bad.id)).filter((r) => r.kind === 'fit').length, 0, 'no training round was opened');

    // 2. Matching files: global normalisation from the sites' sums, one site on the external trainer.
    const good = await lead<{ id: string }>('POST', '/v1/studies', study('cohort', ['alpha', 'beta', 'gamma']));
    await lead('POST', `/v1/studies/${good.id}/start`, {});
    const done = await finished(good.id);
    assert.equal(done.status, 'completed', done.error ?? '');
    const stats = JSON.parse((await c.store.getKv(`study:${good.id}:normstats`))!) as { mean: number[] };
    assert.ok(Math.abs(stats.mean[0]! - 40) < 3, `global mean age ${stats.mean[0]} combines the sites' sums`);
    const acc = (round: number, site: string | null) => done.metrics.find((m) => m.round === round && m.site === site && m.phase === 'evaluate' && m.name === 'accuracy')?.value;
    const auc = done.metrics.find((m) => m.round === 8 && m.site === null && m.phase === 'evaluate' && m.name === 'auc')?.value;
    assert.ok(auc !== undefined && auc > 0.7, `the federated model finds the signal (AUC ${auc})`);
    assert.ok(acc(8, 'gamma') !== undefined, 'the external-trainer site took part to the end');
    assert.ok(done.metrics.some((m) => m.site === 'gamma' && m.phase === 'fit' && m.name === 'loss'), 'the external trainer reported its training loss');
  } finally {
    await stopAll(children);
    await c?.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
