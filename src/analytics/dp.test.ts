/**
 * DP noise on analytics releases: the Laplace RDP curve against the Rényi divergence integrated
 * numerically from its definition; the noise each answer states against the noise it carries
 * (empirically, over many releases); the spend in the ledger's shape; refusals when the budget
 * cannot afford a query, leaving the account unchanged.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkValue, PrivacySpendSchema } from '../protocol/api.js';
import { PrivacyBudget } from '../privacy/budget.js';
import { CryptoNormal } from '../privacy/noise.js';
import { rdpLaplace } from '../privacy/rdp.js';
import { defaultHeartDir } from '../site/data/heart.js';
import { SiteTable } from './columns.js';
import { answerQuery, QueryFailed, runQuery } from './query.js';
import type { AnalyticsPolicy } from './spec.js';
import type { CountResult, SiteInput, SummaryResult } from './statistics.js';
import type { CountAnswer, SummaryAnswer } from './answers.js';
import { HEART_STATS_SCHEMA, heartTables } from './testing.js';

test('Laplace RDP equals the Rényi divergence of Lap(0, λ) from Lap(1, λ), integrated numerically', () => {
  for (const lambda of [0.5, 1, 3]) {
    for (const alpha of [1.5, 2, 4, 10, 32]) {
      // ∫ p^α q^(1−α): Simpson's rule over a range whose tails are below 1e-20 of the mass.
      const lo = -60 * lambda, hi = 1 + 60 * lambda, m = 400_000, h = (hi - lo) / m;
      const f = (x: number) => Math.exp(-(alpha * Math.abs(x) + (1 - alpha) * Math.abs(x - 1)) / lambda) / (2 * lambda);
      let s = f(lo) + f(hi);
      for (let i = 1; i < m; i++) s += (i % 2 ? 4 : 2) * f(lo + i * h);
      const numeric = Math.log((s * h) / 3) / (alpha - 1);
      assert.ok(Math.abs(rdpLaplace(lambda, alpha) - numeric) < 1e-7 * Math.max(1, numeric), `λ=${lambda} α=${alpha}: ${rdpLaplace(lambda, alpha)} vs ${numeric}`);
    }
    // Pure DP as α → ∞.
    assert.ok(Math.abs(rdpLaplace(lambda, 1e6) - 1 / lambda) < 1e-4);
  }
});

const tables = heartTables(defaultHeartDir());
const site = (policy: AnalyticsPolicy, budget: PrivacyBudget, seed: number): SiteInput => ({
  table: new SiteTable(tables['cleveland']!, HEART_STATS_SCHEMA), policy, noise: new CryptoNormal(new Uint8Array(32).fill(seed)), dp: { budget, noise: new CryptoNormal() },
});

test('noisy counts carry the noise their answer states (Laplace and Gaussian), and each release is charged', () => {
  const exact = answerQuery({ query: { kind: 'count', by: ['sex'] } }, site({ minCellCount: 1 }, new PrivacyBudget(1, 1e-5), 1)).answer as CountAnswer;
  for (const dp of [{ mechanism: 'laplace' as const, epsilon: 0.5 }, { mechanism: 'gaussian' as const, epsilon: 0.5, delta: 1e-5 }]) {
    const budget = new PrivacyBudget(1e6, 1e-5);
    const input = site({ minCellCount: 1, dp }, budget, 2);
    const runs = 3000, errs: number[] = [];
    let sd = 0;
    for (let i = 0; i < runs; i++) {
      const a = answerQuery({ query: { kind: 'count', by: ['sex'] } }, input);
      const ans = a.answer as CountAnswer;
      sd = ans.noise!.sd[0]!;
      errs.push(ans.counts[1]! - exact.counts[1]!);
      assert.deepEqual(checkValue(PrivacySpendSchema, a.spend), []);
      assert.equal(a.spend!.mechanism, dp.mechanism);
    }
    const mean = errs.reduce((x, y) => x + y, 0) / runs;
    const emp = Math.sqrt(errs.reduce((x, y) => x + (y - mean) ** 2, 0) / (runs - 1));
    // 3000 draws: the mean is within 4 standard errors of 0 and the sd within 8 % of the stated one.
    assert.ok(Math.abs(mean) < (4 * sd) / Math.sqrt(runs), `${dp.mechanism}: mean noise ${mean}`);
    assert.ok(Math.abs(emp / sd - 1) < 0.08, `${dp.mechanism}: empirical sd ${emp}, stated ${sd}`);
    // Laplace at ε per query: λ = 1/ε, sd √2/ε. Gaussian: σ so one release costs ε at δ.
    if (dp.mechanism === 'laplace') assert.ok(Math.abs(sd - Math.SQRT2 / 0.5) < 1e-12);
    assert.equal(budget.records().length, runs);
  }
  // One Gaussian query spends exactly its ε (at the budget's δ, the policy's δ).
  const b = new PrivacyBudget(5, 1e-5);
  const one = answerQuery({ query: { kind: 'count' } }, site({ minCellCount: 1, dp: { mechanism: 'gaussian', epsilon: 0.5, delta: 1e-5 } }, b, 3));
  // noiseMultiplierFor solves for σ to a relative 1e-6, and never overshoots ε.
  assert.ok(one.spend!.epsilon <= 0.5 && one.spend!.epsilon > 0.5 * (1 - 1e-4), `spent ${one.spend!.epsilon}`);
  assert.equal(one.spend!.budgetEpsilon, 5);
});

test('a DP summary needs bounds, has no min/max, and its pooled mean is within the stated noise', () => {
  const policy: AnalyticsPolicy = { minCellCount: 5, dp: { mechanism: 'gaussian', epsilon: 1, delta: 1e-5 } };
  const budget = () => new PrivacyBudget(100, 1e-5);
  const noBounds = runQueryAll({ kind: 'summary', column: 'age' }, policy, budget);
  assert.ok(noBounds instanceof QueryFailed && /must declare bounds: \[lower, upper\]/.test(noBounds.message) && /site cleveland/.test(noBounds.message));
  const minMax = runQueryAll({ kind: 'summary', column: 'age', statistics: ['min'], bounds: [0, 100] }, policy, budget);
  assert.ok(minMax instanceof QueryFailed && /min\/max have no DP mechanism/.test(minMax.message));
  const exact = runQuery({ kind: 'summary', column: 'age', bounds: [0, 100] }, inputs({ minCellCount: 5 }, budget)).result as SummaryResult;
  const noisy = runQueryAll({ kind: 'summary', column: 'age', bounds: [0, 100] }, policy, budget) as SummaryResult;
  const g = noisy.groups[0]!, e = exact.groups[0]!;
  assert.ok(g.noise && g.noise.mean > 0);
  assert.ok(Math.abs(g.mean - e.mean) < 5 * g.noise.mean, `mean ${g.mean} vs exact ${e.mean}, noise sd ${g.noise.mean}`);
  assert.ok(Math.abs(g.n - e.n) < 5 * g.noise.n);
});

test('a budget that cannot afford the noise refuses the query and spends nothing', () => {
  const budget = new PrivacyBudget(0.3, 1e-5);
  const input = site({ minCellCount: 1, dp: { mechanism: 'laplace', epsilon: 0.5 } }, budget, 4);
  assert.throws(() => answerQuery({ query: { kind: 'count' } }, input), /privacy budget: this query \(laplace noise at ε=0.5 over 1 released component\) would bring the study's ε to [0-9.]+, over this site's budget ε=0.3/);
  assert.equal(budget.spent(), 0);
  assert.equal(budget.records().length, 0);
  const noBudget: SiteInput = { ...input, dp: undefined } as unknown as SiteInput;
  delete (noBudget as { dp?: unknown }).dp;
  assert.throws(() => answerQuery({ query: { kind: 'count' } }, noBudget), /requires DP noise but has no privacy budget/);
});

function inputs(policy: AnalyticsPolicy, budget: () => PrivacyBudget): Record<string, SiteInput> {
  return Object.fromEntries(Object.entries(tables).map(([id, t], i) => [id, {
    table: new SiteTable(t, HEART_STATS_SCHEMA), policy, noise: new CryptoNormal(new Uint8Array(32).fill(10 + i)), dp: { budget: budget(), noise: new CryptoNormal() },
  }]));
}

function runQueryAll(q: Parameters<typeof runQuery>[0], policy: AnalyticsPolicy, budget: () => PrivacyBudget): SummaryResult | CountResult | QueryFailed {
  try {
    return runQuery(q, inputs(policy, budget)).result as SummaryResult;
  } catch (e) {
    if (e instanceof QueryFailed) return e;
    throw e;
  }
}

test('DP summaries report noisy sums, never the exact moments', () => {
  const a = answerQuery({ query: { kind: 'summary', column: 'age', bounds: [0, 100] } }, site({ minCellCount: 5, dp: { mechanism: 'laplace', epsilon: 1 } }, new PrivacyBudget(10, 1e-5), 5)).answer as SummaryAnswer;
  const g = a.groups[0]!;
  assert.ok('sum' in g && !('mean' in g));
  assert.equal(a.noise!.sd.length, 3);
});
