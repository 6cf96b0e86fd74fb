/** Bad queries and refusals: each names the field or the site and the reason, and lists what is allowed. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { defaultHeartDir } from '../site/data/heart.js';
import { parseCsv } from '../site/data/csv.js';
import { CryptoNormal } from '../privacy/noise.js';
import { SiteTable } from './columns.js';
import { answerProblems, answerQuery, QueryFailed, runQuery } from './query.js';
import { parseAnalyticsSpec, parsePolicy, parseQuery, type AnalyticsPolicy, type QuerySpec } from './spec.js';
import { HEART_STATS_SCHEMA, heartTables, siteInputs } from './testing.js';

const sites = () => siteInputs(heartTables(defaultHeartDir()), HEART_STATS_SCHEMA, { minCellCount: 5 });

function failure(q: QuerySpec, inputs = sites()): QueryFailed {
  try {
    runQuery(q, inputs);
  } catch (e) {
    if (e instanceof QueryFailed) return e;
    throw e;
  }
  assert.fail('the query was answered');
}

test('an unknown column or a type mismatch is refused by every site, naming the site and listing the columns', () => {
  const unknown = failure({ kind: 'summary', column: 'cholesterol' });
  assert.deepEqual(Object.keys(unknown.refusals).sort(), ['cleveland', 'hungarian', 'switzerland', 'va']);
  assert.match(unknown.message, /site cleveland: unknown column "cholesterol": the study's data schema has no such column \(its numeric columns: age, trestbps, chol, thalach, oldpeak, ca\)/);
  const numericOnCategorical = failure({ kind: 'summary', column: 'sex' });
  assert.match(numericOnCategorical.refusals['va']!, /column "sex" is categorical, this query needs a numeric column \(numeric columns: age, trestbps, chol, thalach, oldpeak, ca\)/);
  const categoricalOnNumeric = failure({ kind: 'count', by: ['age'] });
  assert.match(categoricalOnNumeric.refusals['va']!, /by-column "age" is numeric, this query needs a categorical column \(categorical columns: sex, cp, fbs, restecg, exang, slope, thal, num\)/);
  assert.match(failure({ kind: 'kaplan-meier' }).refusals['va']!, /survival queries need a data schema with a survival task .* this study's task is binary/);
});

test("a site whose policy forbids the query refuses it; the others answer and the result says who did not", () => {
  const inputs = sites();
  inputs['va'] = { ...inputs['va']!, policy: { minCellCount: 5, allow: ['count'] } };
  const run = runQuery({ kind: 'summary', column: 'age' }, inputs);
  assert.deepEqual(Object.keys(run.refusals), ['va']);
  assert.match(run.refusals['va']!, /this site's policy does not allow summary queries \(it allows: count\)/);
  assert.deepEqual(Object.keys(run.rounds[0]!).sort(), ['cleveland', 'hungarian', 'switzerland']);
});

test('a Cox model with a shared baseline needs the sites\' explicit consent to release risk-set sums', () => {
  const text = 'time,status,age\n' + Array.from({ length: 40 }, (_, i) => `${10 + i},${i % 3 ? 1 : 0},${40 + (i * 7) % 30}`).join('\n');
  const schema = { features: [{ name: 'age', type: 'numeric' as const }], task: { kind: 'survival' as const, time: 'time', event: 'status' }, split: { kind: 'stratified' as const, trainFraction: 0.5, seed: 1 } };
  const input = (policy: AnalyticsPolicy) => ({ a: { table: new SiteTable(parseCsv(text, 'a.csv'), schema), policy, noise: new CryptoNormal() } });
  const e = failure({ kind: 'cox', covariates: ['age'], strata: 'none' }, input({ minCellCount: 5 }));
  assert.match(e.message, /site a: a Cox model with one shared baseline \(strata: none\) needs this site's risk-set sums .*\(set allowRiskSetSums: true, or ask for strata: site\)/);
  assert.doesNotThrow(() => runQuery({ kind: 'cox', covariates: ['age'], strata: 'none' }, input({ minCellCount: 5, allowRiskSetSums: true })));
});

test('a site whose file does not match the schema refuses with the problems', () => {
  const t = parseCsv('age,sex\n50,1\n', 'bad.csv');
  assert.throws(() => new SiteTable(t, HEART_STATS_SCHEMA), /the data does not match the study's schema: column "cp" is missing from bad.csv/);
});

test('query, policy and analytics-block validation name the field and what is allowed', () => {
  assert.throws(() => parseQuery({ kind: 'median', column: 'age' }), /invalid query: \/kind: "median" is not one of count, summary, histogram, quantiles, missingness, kaplan-meier, log-rank, cox/);
  assert.throws(() => parseQuery({ kind: 'histogram', column: 'age', range: [80, 20], bins: 10 }), /\/range: lower end 80 must be below upper end 20/);
  assert.throws(() => parseQuery({ kind: 'count', by: ['sex'], colour: 'red' }), /invalid count query: \/colour/);
  assert.throws(() => parseQuery({ kind: 'cox', covariates: [], ties: 'exact' }), /invalid cox query: .*\/covariates/);
  assert.throws(() => parsePolicy({ minCellCount: 0 }), /invalid analytics policy: \/minCellCount/);
  assert.throws(() => parsePolicy({ minCellCount: 5, dp: { mechanism: 'gaussian', epsilon: 1 } }), /\/dp\/delta: the Gaussian mechanism needs a δ/);
  assert.throws(() => parseAnalyticsSpec({ queries: [{ kind: 'count' }, { kind: 'summary' }] }), /\/queries\/1: invalid summary query: \/column/);
  assert.deepEqual(parseAnalyticsSpec({ queries: [{ name: 'cohort', kind: 'count', by: ['sex'] }] }), { queries: [{ kind: 'count', by: ['sex'], name: 'cohort' }] });
});

test('the coordinator refuses an answer with a small count, of the wrong kind, or with fields it does not know', () => {
  const input = sites()['switzerland']!;
  const good = answerQuery({ query: { kind: 'count', by: ['sex'] } }, input).answer;
  assert.deepEqual(answerProblems({ kind: 'count', by: ['sex'] }, good), []);
  const tampered = { ...good, counts: (good as { counts: unknown[] }).counts.map(() => 3) };
  assert.match(answerProblems({ kind: 'count', by: ['sex'] }, tampered)[0]!, /counts\[0\] = 3 is below the site's minimum cell count 5/);
  assert.match(answerProblems({ kind: 'summary', column: 'age' }, good)[0]!, /a summary query expects a summary answer, got "count"/);
  assert.ok(answerProblems({ kind: 'count', by: ['sex'] }, { ...good, rows: [[1, 2]] }).length > 0);
  const km = answerQuery({ query: { kind: 'count' } }, input).answer;
  assert.deepEqual(answerProblems({ kind: 'count' }, km), []);
});
