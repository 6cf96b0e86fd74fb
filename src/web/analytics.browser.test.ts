/**
 * An analytics study on the dashboard, in Debian's Chromium via playwright-core: a coordinator in this process and
 * three sites that speak the agent protocol from this test with the agent's own answer code (site/analytics-task.ts),
 * one of which refuses the survival queries under its policy. The study page shows every query with its status,
 * rounds and the refusing site's reason; each result as a table (counts, histogram bins, Kaplan–Meier medians and the
 * full KM table, log-rank, Cox HR with CI and p) and its plot (an <img> of the SVG that loaded); the page fills in as
 * rounds commit, without a reload; the CSV download is the CLI's (`resultCsv` of the JSON the route returns) and the
 * JSON download is that entry; and in English, Japanese and Hindi nothing is drawn as a missing glyph and no CSP
 * violation is reported. Screenshots go to test-artifacts/analytics-<lang>.png.
 *
 * Without /usr/bin/chromium the test is skipped, except under CI=true, where it fails.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import YAML from 'yaml';
import type { BrowserContext, Page } from 'playwright-core';
import { startCoordinator, type RunningCoordinator } from '../coordinator/start.js';
import { adminOf, freePort, studyLeadClient } from '../testing/processes.js';
import { HttpClient } from '../site/http.js';
import { generateSigningKeys } from '../protocol/signing.js';
import type { ResultMeta, TaskMessage } from '../protocol/api.js';
import type { DataSchema } from '../protocol/data-schema.js';
import type { AnalyticsPolicy, QuerySpec, StudyResults } from '../protocol/analytics.js';
import { parseSiteConfig, type SiteConfig } from '../site/config.js';
import { SiteState } from '../site/state.js';
import { prepareReport } from '../site/datasets.js';
import { answerAnalyticsTask } from '../site/analytics-task.js';
import { parseCsv } from '../site/data/csv.js';
import { createRng } from '../learning/rng.js';
import { queryFileName, resultCsv } from '../analytics/export.js';
import type { QueryResult } from '../analytics/results.js';
import { CHROMIUM, launchChromium, missingGlyphs, watchCspViolations } from './browser-checks.js';

const ARTIFACTS = resolve(process.env['SETU_TEST_ARTIFACTS'] ?? join(process.cwd(), 'test-artifacts'));
const skip = existsSync(CHROMIUM) || process.env['CI'] === 'true' ? false : `no Chromium at ${CHROMIUM} (apt-get install -y chromium); under CI=true this fails instead`;

const SCHEMA: DataSchema = {
  features: [{ name: 'age', type: 'numeric' }, { name: 'sex', type: 'categorical', levels: ['1', '2'] }],
  task: { kind: 'survival', time: 'time', event: 'status' },
  split: { kind: 'stratified', trainFraction: 0.7, seed: 1 },
};
// gamma answers only counts and histograms: its refusal of the survival queries must show, with its reason.
const POLICY: Record<string, AnalyticsPolicy> = { alpha: { minCellCount: 5 }, beta: { minCellCount: 5 }, gamma: { minCellCount: 5, allow: ['count', 'histogram'] } };
const QUERIES: Array<QuerySpec & { name: string }> = [
  { name: 'by sex', kind: 'count', by: ['sex'] },
  { name: 'age', kind: 'histogram', column: 'age', range: [20, 80], bins: 12 },
  { name: 'km', kind: 'kaplan-meier', by: 'sex' },
  { name: 'logrank', kind: 'log-rank', group: 'sex', strata: 'site' },
  { name: 'cox', kind: 'cox', covariates: ['age', 'sex'], ties: 'efron', strata: 'site' },
];

/** Exponential survival whose hazard rises with age and is lower for sex 2, censored uniformly: a cohort per site. */
function cohort(seed: number, n: number): string {
  const rng = createRng(seed, 'dashboard-analytics');
  const rows = ['age,sex,time,status'];
  for (let i = 0; i < n; i++) {
    const age = Math.round(50 + 9 * rng.normal());
    const sex = rng.next() < 0.45 ? 2 : 1;
    const hazard = 0.008 * Math.exp(0.035 * (age - 50) - 0.6 * (sex - 1));
    const t = Math.max(1, Math.round(-Math.log(1 - rng.next()) / hazard));
    const c = Math.round(60 + 500 * rng.next());
    rows.push(`${age},${sex},${Math.min(t, c)},${t <= c ? 1 : 0}`);
  }
  return rows.join('\n') + '\n';
}

interface Site { name: string; cfg: SiteConfig; state: SiteState; csv: string; client?: HttpClient }

test('dashboard: an analytics study shows its queries as tables and plots, refusals, downloads, in three languages (Chromium)', { skip, timeout: 300_000 }, async (t) => {
  assert.ok(existsSync(CHROMIUM), `Chromium is required in CI: no ${CHROMIUM} (apt-get install -y chromium; never a downloaded browser)`);
  const dir = mkdtempSync(join(tmpdir(), 'setu-dash-analytics-'));
  const profile = mkdtempSync(join(tmpdir(), 'setu-chromium-'));
  mkdirSync(ARTIFACTS, { recursive: true });
  const c: RunningCoordinator = await startCoordinator({ dataDir: join(dir, 'coord'), port: await freePort(), tickMs: 50 });
  const url = c.url;
  let stop = false;
  let go = false;
  let serving: Promise<void>[] = [];
  let ctx: BrowserContext | undefined;
  try {
    const admin = adminOf(c);
    const sites: Site[] = ([['alpha', cohort(1, 120)], ['beta', cohort(2, 160)], ['gamma', cohort(3, 90)]] as const).map(([name, csv]) => {
      const d = join(dir, name);
      mkdirSync(d, { recursive: true });
      writeFileSync(join(d, 'd.csv'), csv);
      const cfg = parseSiteConfig(YAML.stringify({ coordinator: url, datasets: { d: { format: 'csv', path: 'd.csv' } }, analytics: POLICY[name] }), join(d, 'site.yaml'));
      return { name, cfg, state: new SiteState(cfg.stateDirAbs), csv };
    });
    for (const s of sites) {
      const inv = await admin.json<{ token: string }>('POST', '/v1/invites', { siteName: s.name });
      const keys = generateSigningKeys();
      const r = await new HttpClient({ baseUrl: url, giveUpAfterMs: 10_000 }).json<{ siteId: string }>('POST', '/v1/enrol', { token: inv.token, publicKey: keys.publicKeyRaw, cohorts: { d: parseCsv(s.csv, 'd.csv').rows.length } });
      s.client = new HttpClient({ baseUrl: url, signer: { keyId: r.siteId, privateKey: keys.privateKey }, giveUpAfterMs: 30_000 });
      await s.client.json('PUT', '/v1/agent/compute', { mode: 'own' });
      await s.client.json('PUT', '/v1/agent/trainer', { kind: 'builtin', description: 'built-in', models: ['logistic', 'mlp', 'cox'], features: [] });
    }
    // Each site polls and answers as the agent does (site/agent.ts): its answer, or its refusal with the reason.
    // The analytics rounds wait until the browser is watching, so the page is seen filling in live.
    const serve = async (s: Site) => {
      while (!stop) {
        const r = await s.client!.request('GET', '/v1/agent/task?waitMs=500');
        if (r.status === 204) continue;
        const task = r.json<TaskMessage>();
        let meta: ResultMeta;
        if (task.kind === 'prepare') {
          const { report, examples } = await prepareReport(s.cfg, task);
          meta = { taskId: task.taskId, numExamples: examples, prepare: report };
        } else {
          while (!go && !stop) await new Promise((res) => setTimeout(res, 50));
          const out = answerAnalyticsTask(s.cfg, s.state, task, s.name);
          if ('refusal' in out) {
            await s.client!.json('POST', `/v1/agent/tasks/${encodeURIComponent(task.taskId)}/refuse`, { reason: out.refusal });
            continue;
          }
          meta = out.meta;
        }
        await s.client!.json('POST', `/v1/agent/tasks/${encodeURIComponent(task.taskId)}/result`, meta);
      }
    };
    serving = sites.map((s) => serve(s));

    const lead = await studyLeadClient(admin, url);
    const spec = { name: 'survival by sex', dataset: 'd', dataSchema: SCHEMA, sites: sites.map((s) => s.name), roundTimeoutSeconds: 60, analytics: { queries: QUERIES } };
    const { id } = await lead.json<{ id: string }>('POST', '/v1/studies', spec);
    await lead.json('POST', `/v1/studies/${id}/start`, {});

    ctx = await launchChromium(profile, { acceptDownloads: true });
    const errors: string[] = [];
    await watchCspViolations(ctx, errors);
    const page: Page = await ctx.newPage();
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${url}/#/studies/${id}`);
    await page.locator('[data-testid=credential]').fill(readFileSync(join(dir, 'coord', 'admin.key'), 'utf8'));
    await page.locator('[data-testid=login]').click();
    await page.locator('[data-testid=analytics]').waitFor({ timeout: 20_000 });
    assert.equal(await page.locator('[data-testid=analytics-query]').count(), QUERIES.length, 'one card per query');
    assert.equal(await page.locator('[data-testid=analytics-query][data-status=done]').count(), 0, 'nothing answered yet');
    await page.locator('[data-testid=live][data-live=connected]').waitFor({ timeout: 15_000 });
    await page.evaluate(() => ((window as unknown as { __sameDocument: boolean }).__sameDocument = true));

    // The sites answer now; the page fills in from the stream (round.committed), not by a reload.
    go = true;
    await page.locator('[data-testid=analytics-query][data-status=done]').nth(QUERIES.length - 1).waitFor({ timeout: 120_000 });
    assert.equal(await page.evaluate(() => (window as unknown as { __sameDocument?: boolean }).__sameDocument), true, 'the page was not reloaded');
    const results = await lead.json<StudyResults>('GET', `/v1/studies/${id}/results`);
    assert.deepEqual(results.queries.map((q) => q.status), QUERIES.map(() => 'done'));

    const card = (kind: string) => page.locator(`[data-testid=analytics-query][data-kind=${kind}]`);
    // Refusals: gamma, for each survival query, in its own words.
    for (const kind of ['kaplan-meier', 'log-rank', 'cox']) assert.match(await card(kind).locator('[data-testid=analytics-refusal][data-site=gamma]').innerText(), /gamma[\s\S]*policy does not allow/);
    assert.equal(await card('count').locator('[data-testid=analytics-refusal]').count(), 0);
    // Tables: a row per cell, per bin (below, 12 bins, above, missing), per KM curve (+ all), per covariate.
    const counts = results.queries[0]!.result as Extract<QueryResult, { kind: 'count' }>;
    assert.equal(await card('count').locator('[data-testid=result-table] tbody tr').count(), counts.cells.length);
    assert.match(await card('count').locator('[data-testid=result-table] tbody tr').first().innerText(), new RegExp(`^1\\s+${counts.cells[0]!.count}$`));
    assert.equal(await card('histogram').locator('[data-testid=result-table] tbody tr').count(), 15);
    assert.equal(await card('kaplan-meier').locator('[data-testid=result-table] tbody tr').count(), 3);
    const km = results.queries[2]!.result as Extract<QueryResult, { kind: 'kaplan-meier' }>;
    assert.equal(await card('kaplan-meier').locator('[data-testid=km-table] tbody tr').count(), km.groups.reduce((n, g) => n + g.time.length, 0), 'the KM table has every time of every curve');
    assert.match(await card('log-rank').locator('[data-testid=logrank-test]').innerText(), /χ² = [\d.]+, df = 1, p = [\d.e-]+/);
    const cox = results.queries[4]!.result as Extract<QueryResult, { kind: 'cox' }>;
    const coxRows = card('cox').locator('[data-testid=result-table] tbody tr');
    assert.equal(await coxRows.count(), cox.names.length);
    assert.match(await coxRows.first().innerText(), new RegExp(`^${cox.names[0]}\\s+${cox.coef[0]!.toFixed(4).replace('.', '\\.').replace('-', '-?')}`));
    // Plots: the KM curves, the histogram and the forest plot are SVG images the browser decoded; counts and the
    // log-rank test are tables only.
    for (const kind of ['histogram', 'kaplan-meier', 'cox']) {
      const img = card(kind).locator('[data-testid=analytics-plot]');
      assert.equal(await img.count(), 1, `${kind}: one plot`);
      const size = await img.evaluate((el) => new Promise<[number, number]>((res) => {
        const i = el as HTMLImageElement;
        if (i.complete) res([i.naturalWidth, i.naturalHeight]);
        else i.onload = () => res([i.naturalWidth, i.naturalHeight]);
      }));
      assert.ok(size[0] >= 600 && size[1] >= 120, `${kind}: the SVG decoded (${size.join('×')})`);
      assert.match(decodeURIComponent((await img.getAttribute('src'))!.split(',')[1]!), kind === 'kaplan-meier' ? /confidence band/ : /<svg/);
    }
    assert.equal(await card('count').locator('[data-testid=analytics-plot]').count(), 0);

    // Downloads: the CSV is the CLI's (`setu study results --csv`: resultCsv of the route's JSON), the JSON that entry.
    for (const [i, kind] of [[2, 'kaplan-meier'], [4, 'cox']] as const) {
      const e = results.queries[i]!;
      const [csv] = await Promise.all([page.waitForEvent('download'), card(kind).locator('[data-testid=analytics-csv]').click()]);
      assert.equal(csv.suggestedFilename(), `${queryFileName(e)}.csv`);
      assert.equal(readFileSync((await csv.path())!, 'utf8'), resultCsv(queryFileName(e), e.result as QueryResult)[`${queryFileName(e)}.csv`], `${kind}: the CLI's CSV`);
      const [json] = await Promise.all([page.waitForEvent('download'), card(kind).locator('[data-testid=analytics-json]').click()]);
      assert.deepEqual(JSON.parse(readFileSync((await json.path())!, 'utf8')).queries, [e]);
    }

    // Three languages: every text has a font, the tables and plots are there, and a screenshot of each.
    for (const lang of ['en', 'ja', 'hi'] as const) {
      await page.locator('[data-testid=lang]').selectOption(lang);
      await page.locator('[data-testid=analytics-plot]').nth(2).waitFor();
      assert.equal(await page.evaluate(() => document.documentElement.lang), lang);
      assert.equal(await page.locator('[data-testid=result-table]').count(), QUERIES.length);
      assert.deepEqual(await missingGlyphs(page), [], `the analytics study in ${lang}: every character has a font`);
      const file = join(ARTIFACTS, `analytics-${lang}.png`);
      await page.screenshot({ path: file, fullPage: true });
      t.diagnostic(`screenshot: ${file}`);
    }
    assert.deepEqual(errors, [], 'no script errors and no CSP violation');
  } finally {
    stop = true;
    go = true;
    await ctx?.close().catch(() => {});
    const ended = await Promise.allSettled(serving);
    await c.close();
    rmSync(dir, { recursive: true, force: true });
    rmSync(profile, { recursive: true, force: true });
    // A site's failure (a refused answer, a lost connection while the test still ran) fails the test here.
    for (const e of ended) if (e.status === 'rejected' && !/closed|ECONNREFUSED|fetch failed/i.test(String(e.reason))) throw e.reason;
  }
});
