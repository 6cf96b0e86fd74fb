/**
 * The site's side of an analytics task: the answer is exactly answerQuery's on the site's own table under its
 * site.yaml policy (small cells suppressed); a forbidden kind, an unknown column, noise without a budget and noise the
 * budget cannot afford are refusals naming the site and the reason; DP noise is charged to the same account file as
 * DP training, persisted before the answer is returned, and a refusal leaves the account as it was.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import YAML from 'yaml';
import type { TaskMessage } from '../protocol/api.js';
import type { DataSchema } from '../protocol/data-schema.js';
import type { AnalyticsPolicy, QuerySpec } from '../protocol/analytics.js';
import { parseSiteConfig } from './config.js';
import { SiteState } from './state.js';
import { BUDGET_FILE } from './privacy.js';
import { answerAnalyticsTask, DEFAULT_ANALYTICS_POLICY } from './analytics-task.js';
import { parseCsv } from './data/csv.js';
import { SiteTable } from '../analytics/columns.js';
import { answerProblems, answerQuery } from '../analytics/query.js';
import { CryptoNormal } from '../privacy/noise.js';

const SCHEMA: DataSchema = {
  features: [{ name: 'age', type: 'numeric' }, { name: 'sex', type: 'categorical', levels: ['1', '2'] }],
  task: { kind: 'survival', time: 'time', event: 'status' },
  split: { kind: 'stratified', trainFraction: 0.7, seed: 1 },
};

/** 50 rows: 38 of sex 1, 12 of sex 2; ages 40–89; times and events from the row number. */
function csvText(): string {
  const rows = ['age,sex,time,status'];
  for (let i = 0; i < 50; i++) rows.push(`${40 + i},${i % 4 === 3 && i < 48 ? 2 : 1},${10 + ((i * 37) % 300)},${i % 3 === 0 ? 0 : 1}`);
  return rows.join('\n') + '\n';
}

function site(dir: string, extra: Record<string, unknown>) {
  writeFileSync(join(dir, 'd.csv'), csvText());
  const cfg = parseSiteConfig(YAML.stringify({ coordinator: 'http://127.0.0.1:1', datasets: { d: { format: 'csv', path: 'd.csv' } }, ...extra }), join(dir, 'site.yaml'));
  return { cfg, state: new SiteState(cfg.stateDirAbs) };
}

const task = (query: QuerySpec, n = 1): TaskMessage => ({
  taskId: `s.r${n}.alpha`, studyId: 's', round: n, kind: 'analytics', modelVersionId: 's.v0', dataSchema: SCHEMA, dataset: 'd',
  model: { kind: 'cox', inputDim: 3 }, strategy: 'FedAvg', seed: 1, deadlineAt: 0, analytics: { index: 0, name: 'q', query },
});

test('an analytics task: exactly answerQuery on the site table under its policy; small cells never in the answer', () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-atask-'));
  try {
    const policy: AnalyticsPolicy = { minCellCount: 13, suppressZeros: true };
    const { cfg, state } = site(dir, { analytics: policy });
    const q: QuerySpec = { kind: 'count', by: ['sex'] };
    const out = answerAnalyticsTask(cfg, state, task(q), 'alpha');
    assert.ok('meta' in out, JSON.stringify(out));
    const direct = answerQuery({ query: q }, { table: new SiteTable(parseCsv(csvText(), 'd.csv'), SCHEMA, 'alpha'), policy, noise: new CryptoNormal() }).answer;
    assert.deepEqual(out.meta.analytics!.answer, direct);
    const counts = (out.meta.analytics!.answer as { counts: Array<number | null> }).counts;
    assert.ok(counts.includes(null), 'the 12 of sex 2 are under 13: suppressed (and the complementary cell with them)');
    for (const c of counts) assert.ok(c === null || c >= 13, `released count ${c}`);
    assert.equal(out.meta.numExamples, 0, 'an answer claims no training examples');
    assert.equal(out.meta.privacy, undefined, 'no noise, no spend');
    // Without an analytics: block the default policy applies.
    const d = site(mkdtempSync(join(tmpdir(), 'setu-atask-')), {});
    const dflt = answerAnalyticsTask(d.cfg, d.state, task(q), 'alpha');
    assert.ok('meta' in dflt);
    assert.equal((dflt.meta.analytics!.answer as { minCellCount: number }).minCellCount, DEFAULT_ANALYTICS_POLICY.minCellCount);
    rmSync(d.cfg.configDir, { recursive: true, force: true });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('refusals name the site and the reason: a kind the policy forbids, an unknown column, noise without a budget', () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-atask-'));
  try {
    const { cfg, state } = site(dir, { analytics: { minCellCount: 5, allow: ['count'] } });
    const forbidden = answerAnalyticsTask(cfg, state, task({ kind: 'histogram', column: 'age', range: [40, 90], bins: 5 }), 'alpha');
    assert.ok('refusal' in forbidden);
    assert.match(forbidden.refusal, /^analytics \(policy\): site alpha refuses the histogram query "q": .*does not allow histogram queries \(it allows: count\)/);
    const unknown = answerAnalyticsTask(cfg, state, task({ kind: 'count', by: ['smoker'] }), 'alpha');
    assert.ok('refusal' in unknown);
    assert.match(unknown.refusal, /unknown-column.*site alpha.*"smoker"/);
    const noisy = site(mkdtempSync(join(tmpdir(), 'setu-atask-')), { analytics: { minCellCount: 5, dp: { mechanism: 'laplace', epsilon: 0.5 } } });
    const noBudget = answerAnalyticsTask(noisy.cfg, noisy.state, task({ kind: 'count' }), 'alpha');
    assert.ok('refusal' in noBudget);
    assert.match(noBudget.refusal, /analytics \(budget\): site alpha .*no privacy budget/);
    rmSync(noisy.cfg.configDir, { recursive: true, force: true });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('DP noise is charged to the same account file as DP training, before the answer is returned; an unaffordable query is refused and spends nothing', () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-atask-'));
  try {
    const { cfg, state } = site(dir, { analytics: { minCellCount: 5, dp: { mechanism: 'laplace', epsilon: 0.4 } }, privacy: { budget: { epsilon: 1, delta: 1e-5 } } });
    const spent: number[] = [];
    let refusal: string | undefined;
    for (let i = 1; i <= 10 && !refusal; i++) {
      const out = answerAnalyticsTask(cfg, state, task({ kind: 'count' }, i), 'alpha');
      if ('refusal' in out) refusal = out.refusal;
      else {
        assert.equal(out.meta.privacy!.mechanism, 'laplace');
        assert.equal(out.meta.privacy!.budgetEpsilon, 1);
        spent.push(out.meta.privacy!.epsilon);
        const account = JSON.parse(readFileSync(join(cfg.stateDirAbs, 'studies', 's', BUDGET_FILE), 'utf8')) as { history: unknown[] };
        assert.equal(account.history.length, i, 'the account on disk holds every release so far');
      }
    }
    assert.ok(spent.length >= 2, `several queries fit in ε=1 (${spent.join(', ')})`);
    assert.ok(spent.every((e, i) => i === 0 || e > spent[i - 1]!) && spent.at(-1)! <= 1, 'the spend grows and stays within the budget');
    assert.match(refusal ?? '', /analytics \(budget\): site alpha .*privacy budget: .*over this site's budget ε=1/);
    const after = JSON.parse(readFileSync(join(cfg.stateDirAbs, 'studies', 's', BUDGET_FILE), 'utf8')) as { history: unknown[] };
    assert.equal(after.history.length, spent.length, 'the refused query spent nothing');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('noisy answers always pass the coordinator\'s check: a small cell that noise pushes below 0 is suppressed, never sent', () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-atask-'));
  try {
    const { cfg, state } = site(dir, { analytics: { minCellCount: 6, dp: { mechanism: 'laplace', epsilon: 0.5 } }, privacy: { budget: { epsilon: 1000, delta: 1e-5 } } });
    // sex has no missing value: the (missing) cell is 0 + noise, below 0 about half the time.
    const q: QuerySpec = { kind: 'count', by: ['sex'] };
    for (let i = 1; i <= 40; i++) {
      const out = answerAnalyticsTask(cfg, state, task(q, i), 'alpha');
      assert.ok('meta' in out, 'refusal' in out ? out.refusal : '');
      assert.deepEqual(answerProblems(q, out.meta.analytics!.answer), [], JSON.stringify(out.meta.analytics!.answer));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
