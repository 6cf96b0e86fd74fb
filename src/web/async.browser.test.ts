/**
 * An asynchronous (FedBuff) study on the dashboard, in Debian's Chromium via playwright-core: a coordinator in this
 * process and four real heart-disease agent processes, one deliberately slow (site.yaml `testing.fitDelayMs`). The
 * study page shows the versions made and the buffer while it trains, who trains from which version, and the
 * staleness histogram of the folded updates as a chart, updating from the event stream without a reload; in English,
 * Japanese and Hindi nothing is drawn as a missing glyph and no CSP violation is reported. Screenshots go to
 * test-artifacts/async-<lang>.png.
 *
 * Without /usr/bin/chromium the test is skipped, except under CI=true, where it fails.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import type { BrowserContext, Page } from 'playwright-core';
import { startCoordinator, type RunningCoordinator } from '../coordinator/start.js';
import { adminOf, freePort, startHeartSite, stopAll, studyLeadClient, waitFor } from '../testing/processes.js';
import type { StudyDetail } from '../protocol/views.js';
import { CHROMIUM, launchChromium, missingGlyphs, watchCspViolations } from './browser-checks.js';

const ARTIFACTS = resolve(process.env['SETU_TEST_ARTIFACTS'] ?? join(process.cwd(), 'test-artifacts'));
const skip = existsSync(CHROMIUM) || process.env['CI'] === 'true' ? false : `no Chromium at ${CHROMIUM} (apt-get install -y chromium); under CI=true this fails instead`;
const VERSIONS = 30;

test('dashboard: an asynchronous study shows its versions, buffer and staleness histogram live, in three languages (Chromium)', { skip, timeout: 300_000 }, async (t) => {
  assert.ok(existsSync(CHROMIUM), `Chromium is required in CI: no ${CHROMIUM} (apt-get install -y chromium; never a downloaded browser)`);
  const dir = mkdtempSync(join(tmpdir(), 'setu-dash-async-'));
  const profile = mkdtempSync(join(tmpdir(), 'setu-chromium-'));
  mkdirSync(ARTIFACTS, { recursive: true });
  const c: RunningCoordinator = await startCoordinator({ dataDir: join(dir, 'coord'), port: await freePort(), tickMs: 100 });
  const agents: ChildProcess[] = [];
  let ctx: BrowserContext | undefined;
  try {
    const admin = adminOf(c);
    for (let k = 0; k < 4; k++) {
      const inv = await admin.json<{ token: string }>('POST', '/v1/invites', { siteName: `hospital-${k}` });
      agents.push(startHeartSite(join(dir, `site-${k}`), c.url, k, inv.token, { pollWaitMs: 2000, ...(k === 3 ? { testing: { fitDelayMs: 1500 } } : {}) }));
    }
    await waitFor('4 enrolled sites', async () => ((await admin.json<unknown[]>('GET', '/v1/sites')).length === 4 ? true : undefined), 60_000);
    const lead = await studyLeadClient(admin, c.url);
    const { id } = await lead.json<{ id: string }>('POST', '/v1/studies', {
      name: 'async on the dashboard', dataset: 'heart', model: { kind: 'logistic', inputDim: 13 }, strategy: { name: 'FedAvg' }, rounds: VERSIONS,
      fit: { localSteps: 20, batchSize: 8, optimizer: { kind: 'sgd', lr: 0.05 } }, seed: 3, async: { bufferSize: 2, maxStaleness: 8 },
    });

    ctx = await launchChromium(profile);
    const errors: string[] = [];
    await watchCspViolations(ctx, errors);
    const page: Page = await ctx.newPage();
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${c.url}/#/studies/${id}`);
    await page.locator('[data-testid=credential]').fill(readFileSync(join(dir, 'coord', 'admin.key'), 'utf8'));
    await page.locator('[data-testid=login]').click();
    await page.locator('[data-testid=async-progress][data-version="0"]').waitFor({ timeout: 20_000 });
    await page.locator('[data-testid=live][data-live=connected]').waitFor({ timeout: 15_000 });
    await page.evaluate(() => ((window as unknown as { __sameDocument: boolean }).__sameDocument = true));

    // The study starts while the page watches; versions come in from the stream.
    await lead.json('POST', `/v1/studies/${id}/start`, {});
    // While it trains: a version reached, the buffer, and the slow site training from an older version.
    const progress = page.locator('[data-testid=async-progress]');
    await page.waitForFunction(() => Number(document.querySelector('[data-testid=async-progress]')?.getAttribute('data-version')) >= 1, undefined, { timeout: 120_000 });
    await progress.filter({ hasText: /hospital-3 from version \d+/ }).waitFor({ timeout: 60_000 });
    // The buffer may hold more than K for a moment: updates that arrive while a version is being folded wait for the next.
    assert.match(await progress.innerText(), new RegExp(`Asynchronous \\(FedBuff\\): version \\d+ of ${VERSIONS}; the buffer holds \\d+ of 2 updates\\.`));
    await page.locator(`[data-testid=async-progress][data-version="${VERSIONS}"]`).waitFor({ timeout: 180_000 });
    assert.equal(await page.evaluate(() => (window as unknown as { __sameDocument?: boolean }).__sameDocument), true, 'the page was not reloaded');
    const d = await waitFor('the study to complete', async () => {
      const s = await admin.json<StudyDetail>('GET', `/v1/studies/${id}`);
      return s.status === 'completed' ? s : undefined;
    }, 120_000, 200);
    assert.equal(d.async!.version, VERSIONS);
    // The histogram the chart draws is the API's: one bar per staleness value seen.
    const chart = page.locator('#chart-staleness');
    await chart.waitFor();
    assert.ok(d.async!.staleness.histogram.length >= 1);
    assert.equal(d.async!.staleness.histogram.reduce((n, b) => n + b.count, 0), 2 * VERSIONS, 'every folded update counted once');

    for (const lang of ['en', 'ja', 'hi'] as const) {
      await page.locator('[data-testid=lang]').selectOption(lang);
      await page.locator('[data-testid=async-progress]').waitFor();
      assert.equal(await page.evaluate(() => document.documentElement.lang), lang);
      assert.deepEqual(await missingGlyphs(page), [], `the asynchronous study in ${lang}: every character has a font`);
      const file = join(ARTIFACTS, `async-${lang}.png`);
      await page.screenshot({ path: file, fullPage: true });
      t.diagnostic(`screenshot: ${file}`);
    }
    assert.deepEqual(errors, [], 'no script errors and no CSP violation');
  } finally {
    await ctx?.close().catch(() => {});
    await stopAll(agents);
    await c.close();
    rmSync(dir, { recursive: true, force: true });
    rmSync(profile, { recursive: true, force: true });
  }
});
