/**
 * `setu analytics` as a user runs it (the real binary): lung exported by R, split into sites by
 * institution, a study file with an analytics block; the Cox fit it prints as JSON equals R's coxph,
 * the files it writes are there, and mistakes get one readable line and exit code 2.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SETU_MAIN } from '../testing/processes.js';
import { parseKeyed, rSkipReason, runR } from '../testing/oracles.js';
import { LUNG_EXPORT, lungCsvText } from '../analytics/testing.js';

const setu = (args: string[], cwd: string) => spawnSync(process.execPath, [SETU_MAIN, 'analytics', ...args], { cwd, encoding: 'utf8', timeout: 120_000 });

const STUDY = `dataSchema:
  features:
    - { name: age, type: numeric }
    - { name: sex, type: categorical, levels: ["1", "2"] }
    - { name: ph.ecog, type: numeric }
  task: { kind: survival, time: time, event: status }
  split: { kind: stratified, trainFraction: 0.7, seed: 1 }
analytics:
  queries:
    - { name: cohort, kind: count, by: [sex] }
    - { name: km-by-sex, kind: kaplan-meier, by: sex }
    - { name: logrank, kind: log-rank, group: sex }
    - { name: cox, kind: cox, covariates: [age, sex, ph.ecog], strata: site }
`;

test('setu analytics on lung split by institution', { skip: rSkipReason() }, (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-analytics-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'lung.csv'), lungCsvText());
  writeFileSync(join(dir, 'study.yaml'), STUDY);

  const help = setu(['--help'], dir);
  assert.equal(help.status, 0);
  assert.match(help.stdout, /usage: setu analytics <query>/);

  const cox = setu(['cox', '--study', 'study.yaml', '--data', 'lung.csv', '--split-by', 'inst', '--covariates', 'age,sex,ph.ecog', '--ties', 'breslow', '--json'], dir);
  assert.equal(cox.status, 0, cox.stderr);
  const fit = (JSON.parse(cox.stdout) as { cox: { result: { coef: number[]; se: number[] } } }).cox.result;
  const r = parseKeyed(runR(`${LUNG_EXPORT}f <- coxph(Surv(time, status) ~ age + sex + ph.ecog + strata(inst), data = d, ties = "breslow")
cat("coef", sprintf("%.17g", coef(f)), "\\n"); cat("se", sprintf("%.17g", sqrt(diag(vcov(f)))), "\\n")`));
  fit.coef.forEach((b, j) => assert.ok(Math.abs(b - r.get('coef')![j]!) <= 1e-6 * Math.abs(r.get('coef')![j]!), `coef ${j}`));
  fit.se.forEach((b, j) => assert.ok(Math.abs(b - r.get('se')![j]!) <= 1e-6 * Math.abs(r.get('se')![j]!), `se ${j}`));

  const all = setu(['run', '--study', 'study.yaml', '--data', 'lung.csv', '--split-by', 'inst', '--min-cell', '5', '--out', 'out'], dir);
  assert.equal(all.status, 0, all.stderr);
  assert.match(all.stdout, /km-by-sex \(kaplan-meier, 18 sites\)/);
  assert.match(all.stdout, /chisq = [0-9.]+ on 1 df, p = /);
  assert.match(all.stdout, /sex=2 +-0\.[0-9]+ +0\.[0-9]+/);
  assert.deepEqual(readdirSync(join(dir, 'out')).sort(), ['cohort.csv', 'cox.csv', 'cox.svg', 'km-by-sex.csv', 'km-by-sex.svg', 'logrank.csv']);
  assert.match(readFileSync(join(dir, 'out', 'km-by-sex.csv'), 'utf8'), /^curve,time,n_risk,n_event,n_censor,surv,std_err,lower,upper\nsex=1,/);
  assert.match(readFileSync(join(dir, 'out', 'cox.svg'), 'utf8'), /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);

  for (const [args, message] of [
    [['cox', '--study', 'study.yaml', '--data', 'lung.csv'], /^setu: analytics cox: --covariates is required\n$/],
    [['summary', '--study', 'study.yaml', '--data', 'lung.csv', '--column', 'weight'], /^setu: summary: no site answered: site pooled: unknown column "weight": the study's data schema has no such column \(its numeric columns: age, ph.ecog, time\)\n$/],
    [['median', '--study', 'study.yaml', '--data', 'lung.csv'], /^setu: unknown analytics query "median" \(known: count, summary, histogram, quantiles, missingness, km, logrank, cox, run\)/],
    [['count', '--study', 'study.yaml', '--data', 'lung.csv', '--split-by', 'hospital'], /^setu: --split-by: .*lung.csv has no column "hospital" \(it has: inst, time, status/],
    [['count', '--study', 'missing.yaml', '--data', 'lung.csv'], /^setu: cannot read study file missing.yaml: ENOENT\n$/],
  ] as const) {
    const res = setu([...args], dir);
    assert.equal(res.status, 2, `${args.join(' ')}: ${res.stderr}`);
    assert.match(res.stderr, message);
  }
});
