/**
 * The coordinator's side of an analytics study, driven over HTTP by two sites that speak the agent protocol from this
 * test (signed requests, the agent's own answer code), so a site can misbehave on purpose:
 * - an answer carrying a count under the minimum the site states is refused (400 analytics_answer), audited, and
 *   nothing is stored; the honest answer is then accepted;
 * - the coordinator is closed after the first Newton step of a Cox fit and started again on the same data directory:
 *   the fit resumes from the committed state, and every result equals `runQuery` on the same tables exactly.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import YAML from 'yaml';
import { startCoordinator, type RunningCoordinator } from './start.js';
import { adminOf, freePort, studyLeadClient, waitFor } from '../testing/processes.js';
import { ApiError, HttpClient } from '../site/http.js';
import { generateSigningKeys } from '../protocol/signing.js';
import type { ResultMeta, StudySpec, TaskMessage } from '../protocol/api.js';
import type { DataSchema } from '../protocol/data-schema.js';
import type { AnalyticsPolicy, QuerySpec, StudyResults } from '../protocol/analytics.js';
import { parseSiteConfig, type SiteConfig } from '../site/config.js';
import { SiteState } from '../site/state.js';
import { prepareReport } from '../site/datasets.js';
import { answerAnalyticsTask } from '../site/analytics-task.js';
import { parseCsv } from '../site/data/csv.js';
import { SiteTable } from '../analytics/columns.js';
import { runQuery } from '../analytics/query.js';
import { CryptoNormal } from '../privacy/noise.js';
import { createRng } from '../learning/rng.js';
import { listAudit } from '../governance/audit-store.js';

const SCHEMA: DataSchema = {
  features: [{ name: 'age', type: 'numeric' }, { name: 'sex', type: 'categorical', levels: ['1', '2'] }],
  task: { kind: 'survival', time: 'time', event: 'status' },
  split: { kind: 'stratified', trainFraction: 0.7, seed: 1 },
};
const POLICY: Record<string, AnalyticsPolicy> = { alpha: { minCellCount: 10, suppressZeros: true }, beta: { minCellCount: 6 } };
const QUERIES: Array<QuerySpec & { name: string }> = [
  { name: 'by sex', kind: 'count', by: ['sex'] },
  { name: 'cox', kind: 'cox', covariates: ['age', 'sex'], ties: 'breslow', strata: 'site' },
];

/** Exponential survival times whose hazard rises with age and is lower for sex 2; about a quarter censored. */
function cohort(seed: number, n: number, share2: number): string {
  const rng = createRng(seed, 'analytics-cohort');
  const rows = ['age,sex,time,status'];
  for (let i = 0; i < n; i++) {
    const age = Math.round(50 + 10 * rng.normal());
    const sex = rng.next() < share2 ? 2 : 1;
    const hazard = 0.01 * Math.exp(0.04 * (age - 50) - 0.5 * (sex - 1));
    const t = Math.max(1, Math.round(-Math.log(1 - rng.next()) / hazard));
    const c = Math.round(50 + 400 * rng.next());
    rows.push(`${age},${sex},${Math.min(t, c)},${t <= c ? 1 : 0}`);
  }
  return rows.join('\n') + '\n';
}

interface FakeSite { name: string; cfg: SiteConfig; state: SiteState; csv: string; client?: HttpClient }

test('analytics rounds: an answer under the stated minimum is refused and audited; a Cox fit survives a coordinator restart; results equal runQuery', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-arounds-'));
  const port = await freePort();
  let c: RunningCoordinator | undefined = await startCoordinator({ dataDir: join(dir, 'coord'), port, tickMs: 50 });
  const url = c.url;
  let stop = false;
  let serving: Promise<void>[] = [];
  try {
    const admin = adminOf(c);
    const sites: FakeSite[] = [['alpha', cohort(1, 90, 0.08)], ['beta', cohort(2, 140, 0.4)]].map(([name, csv]) => {
      const d = join(dir, name!);
      mkdirSync(d, { recursive: true });
      writeFileSync(join(d, 'd.csv'), csv!);
      const cfg = parseSiteConfig(YAML.stringify({ coordinator: url, datasets: { d: { format: 'csv', path: 'd.csv' } }, analytics: POLICY[name!] }), join(d, 'site.yaml'));
      return { name: name!, cfg, state: new SiteState(cfg.stateDirAbs), csv: csv! };
    });
    for (const s of sites) {
      const inv = await admin.json<{ token: string }>('POST', '/v1/invites', { siteName: s.name });
      const keys = generateSigningKeys();
      const n = parseCsv(s.csv, 'd.csv').rows.length;
      const r = await new HttpClient({ baseUrl: url, giveUpAfterMs: 10_000 }).json<{ siteId: string }>('POST', '/v1/enrol', { token: inv.token, publicKey: keys.publicKeyRaw, cohorts: { d: n } });
      s.client = new HttpClient({ baseUrl: url, signer: { keyId: r.siteId, privateKey: keys.privateKey }, giveUpAfterMs: 30_000 });
      await s.client.json('PUT', '/v1/agent/compute', { mode: 'own' });
      await s.client.json('PUT', '/v1/agent/trainer', { kind: 'builtin', description: 'built-in', models: ['logistic', 'mlp', 'cox'], features: [] });
    }

    // Each site: poll, answer with the agent's own code. alpha first tampers with its count answer once.
    let tampered: ApiError | undefined;
    let paused = true;
    const heldStep2 = new Set<string>();
    const serve = async (s: FakeSite) => {
      while (!stop) {
        try {
          const r = await s.client!.request('GET', '/v1/agent/task?waitMs=500');
          if (r.status === 204) continue;
          const task = r.json<TaskMessage>();
          if (task.analytics?.beta) {
            // The second Newton step: hold the task until the coordinator has been restarted.
            heldStep2.add(s.name);
            while (paused && !stop) await new Promise((r) => setTimeout(r, 20));
          }
          let meta: ResultMeta;
          if (task.kind === 'prepare') {
            const { report, examples } = await prepareReport(s.cfg, task);
            meta = { taskId: task.taskId, numExamples: examples, prepare: report };
          } else {
            const out = answerAnalyticsTask(s.cfg, s.state, task, s.name);
            assert.ok('meta' in out, `site ${s.name}: ${'refusal' in out ? out.refusal : ''}`);
            meta = out.meta;
            if (s.name === 'alpha' && task.analytics!.query.kind === 'count' && !tampered) {
              const answer = structuredClone(meta.analytics!.answer) as { counts: Array<number | null> };
              const hidden = answer.counts.indexOf(null);
              assert.ok(hidden >= 0, 'alpha suppressed a small cell');
              answer.counts[hidden] = 3;
              tampered = await s.client!.json('POST', `/v1/agent/tasks/${encodeURIComponent(task.taskId)}/result`, { ...meta, analytics: { answer } }).then(() => undefined, (e: unknown) => e as ApiError);
              assert.ok(tampered, 'the tampered answer is refused');
              assert.equal((await c!.store.listUpdates(task.studyId, task.round)).filter((u) => u.task_id === task.taskId).length, 0, 'nothing of the refused answer was stored');
            }
          }
          await s.client!.json('POST', `/v1/agent/tasks/${encodeURIComponent(task.taskId)}/result`, meta);
        } catch (e) {
          // A refusal by the coordinator is a failure of the test; a connection error is the restart.
          if (e instanceof assert.AssertionError || (e instanceof ApiError && e.status >= 400 && e.status < 500)) throw e;
          await new Promise((r) => setTimeout(r, 100)); // the coordinator is restarting
        }
      }
    };
    serving = sites.map((s) => serve(s));

    const lead = await studyLeadClient(admin, url);
    const spec: StudySpec = {
      name: 'analytics rounds', dataset: 'd', dataSchema: SCHEMA, model: { kind: 'cox', inputDim: 3 }, strategy: { name: 'FedAvg' }, rounds: 1,
      fit: { localSteps: 1, batchSize: 8, optimizer: { kind: 'sgd', lr: 0.01 } }, sites: sites.map((s) => s.name), roundTimeoutSeconds: 60, analytics: { queries: QUERIES },
    };
    const { id } = await lead.json<{ id: string }>('POST', '/v1/studies', spec);
    await lead.json('POST', `/v1/studies/${id}/start`, {});

    // Once the first Newton step has committed and both sites hold the second step's task, the coordinator goes down
    // and comes back on the same data directory; the sites then answer the task they hold.
    await waitFor('both sites to hold the second Newton step', async () => (heldStep2.size === 2 ? true : undefined), 60_000, 20);
    const committedBefore = (await c.store.listRounds(id)).filter((r) => r.kind === 'analytics' && r.status === 'committed').length;
    assert.equal(committedBefore, 2, 'the count and the first Newton step had committed');
    await c.close();
    c = undefined;
    c = await startCoordinator({ dataDir: join(dir, 'coord'), port, tickMs: 50 });
    paused = false;
    const done = await waitFor('the study to end', async () => {
      const s = await lead.json<{ status: string; error: string | null }>('GET', `/v1/studies/${id}`).catch(() => undefined);
      return s && ['completed', 'failed', 'stopped'].includes(s.status) ? s : undefined;
    }, 60_000, 50);
    assert.equal(done.status, 'completed', done.error ?? '');

    assert.equal(tampered?.status, 400);
    assert.equal(tampered?.code, 'analytics_answer');
    assert.match(tampered!.message, /site alpha: the answer to the count query is refused: .*counts.*3.*10/);
    const audit = await listAudit(c.store, { limit: 10_000 });
    assert.ok(audit.some((e) => e.kind === 'update.refused' && (e.data as { code?: string }).code === 'analytics_answer'), 'the refusal is audited');

    const results = await lead.json<StudyResults>('GET', `/v1/studies/${id}/results`);
    const inputs = Object.fromEntries(sites.map((s) => [s.name, { table: new SiteTable(parseCsv(s.csv, 'd.csv'), SCHEMA, s.name), policy: POLICY[s.name]!, noise: new CryptoNormal() }]));
    QUERIES.forEach(({ name, ...q }, i) => {
      const run = runQuery(q as QuerySpec, inputs);
      assert.deepEqual(results.queries[i]!.result, JSON.parse(JSON.stringify(run.result)), `${name}: equals runQuery`);
      assert.equal(results.queries[i]!.rounds.length, run.rounds.length, `${name}: as many rounds as runQuery`);
    });
    assert.ok(results.queries[1]!.rounds.length >= 3, 'the Cox fit went on after the restart');

    // A second study, now with beta adding Laplace noise under a budget: its spend is in the study's privacy ledger,
    // as beta's own account on disk says, and audited.
    sites[1]!.cfg = parseSiteConfig(YAML.stringify({ coordinator: url, datasets: { d: { format: 'csv', path: 'd.csv' } }, analytics: { minCellCount: 6, dp: { mechanism: 'laplace', epsilon: 0.5 } }, privacy: { budget: { epsilon: 2, delta: 1e-5 } } }), join(dir, 'beta', 'site.yaml'));
    // An analytics study needs no training fields (the file `setu analytics run` reads); a query over a column the
    // schema lacks, or of the wrong type, is refused at creation, naming the query and the field.
    const bare = { name: 'noisy count', dataset: 'd', dataSchema: SCHEMA, sites: ['alpha', 'beta'], roundTimeoutSeconds: 60 };
    const bad = await lead.json('POST', '/v1/studies', { ...bare, analytics: { queries: [{ kind: 'count', by: ['smoker'] }, { kind: 'summary', column: 'sex' }] } }).then(() => undefined, (e: unknown) => e as ApiError);
    assert.equal(bad?.status, 400);
    assert.match(bad!.message, /\/analytics\/queries\/0\/by\/0: the data schema has no column "smoker" \(its categorical columns: sex, status\)/);
    assert.match(bad!.message, /\/analytics\/queries\/1\/column: column "sex" is categorical; a summary query needs a numeric column here \(age, time\)/);
    const noisy = await lead.json<{ id: string }>('POST', '/v1/studies', { ...bare, analytics: { queries: [{ kind: 'count', by: ['sex'] }] } });
    await lead.json('POST', `/v1/studies/${noisy.id}/start`, {});
    const done2 = await waitFor('the noisy study to end', async () => {
      const s = await lead.json<{ status: string; error: string | null }>('GET', `/v1/studies/${noisy.id}`);
      return ['completed', 'failed', 'stopped'].includes(s.status) ? s : undefined;
    }, 60_000, 50);
    assert.equal(done2.status, 'completed', done2.error ?? '');
    const ledger = await lead.json<{ sites: Array<{ site: string; spent: { epsilon: number } }> }>('GET', `/v1/studies/${noisy.id}/privacy`);
    const account = sites[1]!.state.readJson<{ history: unknown[] }>(noisy.id, 'privacy-budget.json')!;
    const betaSpent = ledger.sites.find((x) => x.site === 'beta')?.spent.epsilon;
    assert.ok(betaSpent !== undefined && betaSpent > 0 && betaSpent <= 2, `beta's spend is in the ledger (${betaSpent})`);
    assert.equal(account.history.length, 1, "beta's own account holds the one release");
    assert.equal(ledger.sites.find((x) => x.site === 'alpha')?.spent.epsilon ?? 0, 0, 'alpha added no noise and spent nothing');
    assert.ok((await listAudit(c.store, { limit: 10_000 })).some((e) => e.kind === 'privacy.spent' && (e.data as { study?: string }).study === noisy.id), 'the spend is audited');
  } finally {
    stop = true;
    // A site's own assertion (an unexpected refusal, an accepted tampered answer) fails the test here.
    const ended = await Promise.allSettled(serving);
    await c?.close();
    rmSync(dir, { recursive: true, force: true });
    for (const e of ended) if (e.status === 'rejected') throw e.reason;
  }
});
