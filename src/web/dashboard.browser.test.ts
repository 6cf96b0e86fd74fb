/**
 * The dashboard in a real browser: Debian's Chromium driven by playwright-core (never a downloaded
 * browser). Runs `setu demo --dashboard --dp-epsilon 8` as a child process (the India–Japan demo consortium over
 * real HTTP) and checks, as the people of the consortium:
 *  - the consortium admin: the study's rounds advance over the live stream and its charts draw; once it has ended
 *    it is not "live"; its governance (approvals, terms, sign-offs, release) and per-site table read as a report;
 *    the model and the metrics download; the model card is the Markdown document; compute reads in hours and
 *    minutes without raw JSON; the audit log pages;
 *  - every page in English, Japanese and Hindi, with no text drawn as missing glyphs, and a screenshot of each in
 *    test-artifacts/;
 *  - the study lead: no Audit tab, and the page says the role does not cover it; another lead: the privacy of a study
 *    they do not lead is refused for ownership, and the page says so; a site admin: no model download.
 * Security: the page works under the coordinator's Content-Security-Policy with no violation reported, the
 * answers carry the security headers, and after login the tab holds only a non-extractable CryptoKey (in
 * IndexedDB; no PEM in any storage), which survives a reload.
 *
 * Without /usr/bin/chromium the test is skipped, except under CI=true, where it fails.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BrowserContext, Page } from 'playwright-core';
import { generateSigningKeys, signRequest } from '../protocol/signing.js';
import { decodeSafetensors } from '../protocol/safetensors.js';
import { CHROMIUM, launchChromium, missingGlyphs, watchCspViolations } from './browser-checks.js';

const MAIN_JS = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'cli', 'main.js');
const ARTIFACTS = resolve(process.env['SETU_TEST_ARTIFACTS'] ?? join(process.cwd(), 'test-artifacts'));
// Enough rounds that the federation is still training while the browser logs in and watches.
const ROUNDS = 60;

const skip = existsSync(CHROMIUM) || process.env['CI'] === 'true' ? false : `no Chromium at ${CHROMIUM} (apt-get install -y chromium); under CI=true this fails instead`;

interface KeyFile {
  keyId: string;
  privateKey: string;
}

async function signedCall(base: string, key: KeyFile, method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const text = body === undefined ? undefined : JSON.stringify(body);
  const headers: Record<string, string> = { ...signRequest({ method, path, body: text, keyId: key.keyId, privateKey: key.privateKey }) };
  if (text !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(base + path, { method, headers, ...(text !== undefined ? { body: text } : {}) });
  const raw = await res.text();
  return { status: res.status, json: raw ? JSON.parse(raw) : undefined };
}

/** Starts the demo with the dashboard kept up; resolves with its URL and study id from its progress lines. */
function startDemo(dataDir: string): { child: ChildProcess; ready: Promise<{ url: string; studyId: string }>; log: () => string } {
  const child = spawn(process.execPath, [MAIN_JS, 'demo', '--dashboard', '--rounds', String(ROUNDS), '--seed', '42', '--dp-epsilon', '8', '--data-dir', dataDir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const ready = new Promise<{ url: string; studyId: string }>((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`the demo did not start its study within 90 s:\n${out}`)), 90_000);
    const onData = (d: Buffer) => {
      out += d.toString();
      const url = /dashboard: (https?:\/\/\S+?)\/?\s/.exec(out)?.[1];
      const studyId = /study (\S+) started/.exec(out)?.[1];
      if (url && studyId) {
        clearTimeout(timer);
        res({ url, studyId });
      }
    };
    child.stderr!.on('data', onData);
    child.stdout!.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      rej(new Error(`the demo exited (code ${code}) before its study started:\n${out}`));
    });
  });
  return { child, ready, log: () => out };
}

async function login(page: Page, url: string, hash: string, keyFileText: string): Promise<void> {
  await page.goto(`${url}/${hash}`);
  await page.locator('[data-testid=credential]').fill(keyFileText);
  await page.locator('[data-testid=login]').click();
  await page.locator('[data-testid=role]').waitFor({ timeout: 15_000 });
}

const roundShown = (page: Page) => page.locator('[data-testid=round-progress]').getAttribute('data-round').then(Number);

/**
 * Pixels close to an RGB colour in the top three quarters of a canvas (the plot; the legend, whose colour
 * boxes would match too, sits below it): proof that Chart.js drew that dataset, not just axes and legend.
 */
function pixelsNear(page: Page, selector: string, rgb: [number, number, number]): Promise<number> {
  return page.evaluate(
    ([sel, [r, g, b]]) => {
      const c = document.querySelector(sel) as HTMLCanvasElement | null;
      if (!c) return -1;
      const d = c.getContext('2d')!.getImageData(0, 0, c.width, Math.floor(c.height * 0.75)).data;
      let n = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i + 3]! > 200 && Math.abs(d[i]! - r) < 30 && Math.abs(d[i + 1]! - g) < 30 && Math.abs(d[i + 2]! - b) < 30) n++;
      return n;
    },
    [selector, rgb] as const,
  );
}

const LANGS = ['en', 'ja', 'hi'] as const;
/** Every page, and what shows that it has rendered its data. */
const PAGES: { name: string; hash: (study: string) => string; ready: string }[] = [
  { name: 'overview', hash: () => '#/overview', ready: '[data-testid=site-summary]' },
  { name: 'studies', hash: () => '#/studies', ready: '[data-testid=studies-table]' },
  { name: 'study', hash: (s) => `#/studies/${s}`, ready: '[data-testid=release]' },
  { name: 'privacy', hash: () => '#/privacy', ready: '[data-testid=privacy-table]' },
  { name: 'compute', hash: () => '#/compute', ready: '[data-testid=compute-countries]' },
  { name: 'audit', hash: () => '#/audit', ready: '[data-testid=audit-table]' },
  { name: 'models', hash: () => '#/models', ready: '[data-testid=model-card]' },
];

test('dashboard: live study, reports, every page in three languages, roles (Chromium)', { skip, timeout: 600_000 }, async (t) => {
  assert.ok(existsSync(CHROMIUM), `Chromium is required in CI: no ${CHROMIUM} (apt-get install -y chromium; never a downloaded browser)`);
  const dataDir = mkdtempSync(join(tmpdir(), 'setu-dash-'));
  const profile = mkdtempSync(join(tmpdir(), 'setu-chromium-'));
  mkdirSync(ARTIFACTS, { recursive: true });
  const demo = startDemo(dataDir);
  let ctx: BrowserContext | undefined;
  const shot = async (page: Page, name: string) => {
    const file = join(ARTIFACTS, `dashboard-${name}.png`);
    await page.screenshot({ path: file, fullPage: true });
    t.diagnostic(`screenshot: ${file}`);
  };
  try {
    const { url, studyId } = await demo.ready;
    const keyText = (f: string) => readFileSync(join(dataDir, f), 'utf8');
    const adminKey = JSON.parse(keyText('coordinator/admin.key')) as KeyFile;

    // The API side of the dashboard: it is described at /openapi.json, including the live stream.
    const openapi = (await (await fetch(`${url}/openapi.json`)).json()) as { paths: Record<string, unknown> };
    for (const p of ['/v1/studies/{id}', '/v1/sites', '/v1/events', '/v1/events/token', '/v1/studies/{id}/export']) assert.ok(openapi.paths[p], `openapi.json lacks ${p}`);

    ctx = await launchChromium(profile, { width: 1400, acceptDownloads: true });
    // Security headers on the dashboard and on API answers.
    const home = await fetch(`${url}/`);
    const csp = home.headers.get('content-security-policy') ?? '';
    for (const d of ["default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "object-src 'none'"]) assert.ok(csp.includes(d), `CSP has ${d}: ${csp}`);
    assert.equal(home.headers.get('x-content-type-options'), 'nosniff');
    assert.equal(home.headers.get('x-frame-options'), 'DENY');
    assert.equal(home.headers.get('referrer-policy'), 'no-referrer');
    const sites = await fetch(`${url}/v1/sites`, { headers: signRequest({ method: 'GET', path: '/v1/sites', keyId: adminKey.keyId, privateKey: adminKey.privateKey }) });
    assert.equal(sites.status, 200);
    assert.equal(sites.headers.get('cache-control'), 'no-store', 'API answers are not cached');

    // Every CSP violation the browser reports, in any document of any tab, fails the test.
    const errors: string[] = [];
    await watchCspViolations(ctx, errors);
    const page = await ctx.newPage();
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => {
      if (/Content Security Policy/i.test(m.text())) errors.push(m.text());
    });
    await login(page, url, `#/studies/${studyId}`, keyText('coordinator/admin.key'));
    assert.match(await page.locator('[data-testid=role]').innerText(), /consortium admin/);

    // After login the tab keeps a non-extractable CryptoKey and nothing of the key file's text.
    const pemBody = adminKey.privateKey.replace(/-----[^-]+-----|\s/g, '');
    const held = await page.evaluate(async () => {
      const storage = JSON.stringify({ ...sessionStorage }) + JSON.stringify({ ...localStorage }) + document.cookie;
      const records = await new Promise<unknown[]>((resolve, reject) => {
        const open = indexedDB.open('setu');
        open.onerror = () => reject(open.error);
        open.onsuccess = () => {
          const all = open.result.transaction('sessions').objectStore('sessions').getAll();
          all.onsuccess = () => resolve(all.result as unknown[]);
          all.onerror = () => reject(all.error);
        };
      });
      const keys = records.map((r) => (r as { key: CryptoKey }).key);
      const exports = await Promise.all(keys.map((k) => crypto.subtle.exportKey('pkcs8', k).then(() => 'exported', (e: Error) => e.name)));
      return { storage, records: JSON.stringify(records), kinds: keys.map((k) => [k instanceof CryptoKey, k.type, k.extractable, k.algorithm.name]), exports };
    });
    assert.ok(!held.storage.includes('PRIVATE KEY') && !held.storage.includes(pemBody.slice(0, 40)), `no PEM in web storage: ${held.storage}`);
    assert.ok(!held.records.includes(pemBody.slice(0, 40)), 'no PEM in IndexedDB');
    assert.deepEqual(held.kinds, [[true, 'private', false, 'Ed25519']], 'one non-extractable Ed25519 CryptoKey');
    assert.deepEqual(held.exports, ['InvalidAccessError'], 'the key cannot be exported');
    // A reload keeps the login (the CryptoKey survives in IndexedDB).
    await page.reload();
    await page.locator('[data-testid=role]').waitFor({ timeout: 15_000 });

    // Live: the stream connects and the round counter moves while the page is neither reloaded nor polled.
    await page.locator('[data-testid=live][data-live=connected]').waitFor({ timeout: 15_000 });
    await page.evaluate(() => ((window as unknown as { __sameDocument: boolean }).__sameDocument = true));
    const first = await roundShown(page);
    // At least 3 rounds more, and 10 in all so the lines are long enough to count their pixels.
    const target = Math.max(first + 3, 10);
    await page.waitForFunction((r) => Number(document.querySelector('[data-testid=round-progress]')?.getAttribute('data-round')) >= r, target, { timeout: 90_000 });
    const later = await roundShown(page);
    assert.ok(later >= first + 3, `rounds advanced live: ${first} → ${later}`);
    assert.equal(await page.evaluate(() => (window as unknown as { __sameDocument?: boolean }).__sameDocument), true, 'the page was not reloaded');

    // Charts: the data points are there and Chart.js drew the first site's line (#1f77b4) and all sites' (#111).
    const points = Number(await page.locator('#chart-loss').getAttribute('data-points'));
    assert.ok(points >= 5 * later - 5, `loss chart has ${points} points after ${later} rounds (4 sites + all sites)`);
    for (const chart of ['#chart-loss canvas', '#chart-accuracy canvas']) {
      const [site, global] = [await pixelsNear(page, chart, [31, 119, 180]), await pixelsNear(page, chart, [17, 17, 17])];
      t.diagnostic(`${chart}: ${site} pixels of the first site's colour, ${global} of all sites'`);
      // The sites' lines cross and cover one another (their accuracies are often equal), so only part of the first
      // site's line shows: a few dozen pixels of its colour prove it was drawn; an empty chart has none.
      assert.ok(site > 20, `${chart}: the first site's line is drawn (${site} pixels)`);
      assert.ok(global > 80, `${chart}: the all-sites line is drawn (${global} pixels)`);
    }
    assert.ok((await pixelsNear(page, '#chart-participation canvas', [42, 157, 143])) > 200, 'participation bars are drawn');
    await shot(page, 'study-live-en');

    // The glyph check can fail: a code point no font has is reported.
    assert.deepEqual(await missingGlyphs(page, '\u{10FFFD}'), ['\u{10FFFD}'], 'the missing-glyph check sees a missing glyph');

    // Ended: once completed (and released by the demo), the study is no longer "live".
    await page.locator('[data-testid=live][data-live=ended]').waitFor({ timeout: 180_000 });
    await page.locator('[data-testid=release][data-released=yes]').waitFor({ timeout: 30_000 });
    assert.equal(await page.locator('[data-testid=approvals] tbody tr').count(), 4, 'one approval per site');
    assert.match(await page.locator('[data-testid=approvals] tr[data-site=cleveland]').innerText(), /approved[\s\S]*arjun[\s\S]*heart-disease risk research[\s\S]*no commercial use/);
    assert.equal(await page.locator('[data-testid=signoffs] tbody tr').count(), 5, 'four site admins and the consortium admin signed off');
    // Two accuracies side by side, each saying what it is.
    assert.match(await page.locator('[data-testid=per-site] thead').innerText(), /test accuracy/);
    assert.match(await page.locator('[data-testid=per-site] tr[data-site=all]').innerText(), /all sites \(weighted\)/);

    // Results out: the model (safetensors) and the metrics (CSV), as signed downloads.
    const [model] = await Promise.all([page.waitForEvent('download'), page.locator('[data-testid=download-model]').click()]);
    const weights = decodeSafetensors(new Uint8Array(readFileSync((await model.path())!))).weights;
    assert.deepEqual(weights['weight']!.shape, [1, 13]);
    assert.match(model.suggestedFilename(), /\.safetensors$/);
    const [csv] = await Promise.all([page.waitForEvent('download'), page.locator('[data-testid=export-csv]').click()]);
    const lines = readFileSync((await csv.path())!, 'utf8').trim().split('\n');
    assert.match(lines[0]!, /^round,site,train_loss,test_loss,test_accuracy/);
    assert.equal(lines.length, 1 + (ROUNDS + 1) * 5, 'a row per round (0..R) for each site and for all sites');

    // Every page, in every language: rendered, nothing drawn as a missing glyph, a screenshot of each.
    for (const lang of LANGS) {
      await page.locator('[data-testid=lang]').selectOption(lang);
      for (const p of PAGES) {
        await page.goto(`${url}/${p.hash(studyId)}`);
        await page.locator(p.ready).first().waitFor({ timeout: 20_000 });
        assert.equal(await page.evaluate(() => document.documentElement.lang), lang);
        assert.deepEqual(await missingGlyphs(page), [], `${p.name} in ${lang}: every character has a font`);
        await shot(page, `${p.name}-${lang}`);
      }
    }
    await page.locator('[data-testid=lang]').selectOption('en');

    // The model card is the Markdown document: its headings, tables and the all-sites row, no JSON.
    await page.goto(`${url}/#/models`);
    const card = page.locator('[data-testid=model-card]').first();
    await card.waitFor();
    const cardText = await card.innerText();
    for (const h of ['Model card:', 'Purpose', 'Institutions and jurisdictions', 'Privacy guarantees', 'Performance', 'Compute used', 'Seal']) assert.ok(cardText.includes(h), `the card shows "${h}"`);
    assert.ok((await card.locator('table').count()) >= 3, 'the card has its tables');
    assert.match(cardText, /all sites/);
    assert.match(cardText, /AIIMS New Delhi/);
    // Compute: readable units, countries and institutions, no raw JSON.
    await page.goto(`${url}/#/compute`);
    await page.locator('[data-testid=compute-countries]').waitFor();
    const compute = await page.locator('main').innerText();
    assert.doesNotMatch(compute, /[{}]"|":/, 'no raw JSON on the compute page');
    assert.match(await page.locator('[data-testid=compute-countries] tr[data-key=IN]').innerText(), /India\s+\d[\d.]* (s|min)/);
    // Institution names arrive by their own request after the usage table: wait for them, then read.
    const institutionsTable = page.locator('[data-testid=compute-institutions]');
    await institutionsTable.filter({ hasText: /AIIMS New Delhi \(IN\)/ }).waitFor({ timeout: 20_000 });
    assert.match(await institutionsTable.innerText(), /AIIMS New Delhi \(IN\)/);
    // Audit: pages, entries in words, and filters (or a plain notice where the coordinator cannot filter yet).
    await page.goto(`${url}/#/audit`);
    await page.locator('[data-testid=audit-verify].good').waitFor();
    const pager = page.locator('[data-testid=audit-pager]');
    await pager.waitFor();
    const latestFrom = Number(await pager.getAttribute('data-from'));
    assert.ok(latestFrom > 1, 'the latest page comes first');
    await page.locator('[data-testid=audit-older]').click();
    await page.waitForFunction((f) => Number(document.querySelector('[data-testid=audit-pager]')?.getAttribute('data-from')) < f, latestFrom);
    assert.doesNotMatch(await page.locator('[data-testid=audit-table]').innerText(), /\{"/, 'entries read as words, not JSON');
    await page.locator('[data-testid=audit-kind]').selectOption('model.released');
    await page.locator('[data-testid=audit-apply]').click();
    await page.waitForFunction(() => !!document.querySelector('[data-testid=audit-unfiltered]') || Array.from(document.querySelectorAll('[data-testid=audit-table] tr[data-kind]')).every((r) => r.getAttribute('data-kind') === 'model.released'));
    await shot(page, 'audit-filtered-en');

    // The study lead: no Audit tab, and the page itself says the role does not cover it.
    const lead = await ctx.newPage();
    lead.on('pageerror', (e) => errors.push(e.message));
    await login(lead, url, '#/audit', keyText('people/priya.key'));
    assert.match(await lead.locator('[data-testid=role]').innerText(), /study lead/);
    assert.equal(await lead.locator('[data-nav=audit]').count(), 0, 'no Audit tab for a study lead');
    assert.equal(await lead.locator('[data-nav=studies]').count(), 1);
    await lead.locator('[data-testid=forbidden][data-reason=role]').waitFor();
    assert.match(await lead.locator('[data-testid=forbidden]').innerText(), /Your role does not cover the Audit page/);
    const audit = await signedCall(url, JSON.parse(keyText('people/priya.key')) as KeyFile, 'GET', '/v1/audit');
    assert.equal(audit.status, 403, 'the API refuses a study lead the audit log too');
    await shot(lead, 'audit-study-lead-en');

    // Another study lead: the privacy of a study someone else leads is refused for ownership, and said so.
    const invite = await signedCall(url, adminKey, 'POST', '/v1/users', { name: 'lead-two', role: 'study_lead' });
    assert.equal(invite.status, 200, JSON.stringify(invite.json));
    const keys = generateSigningKeys();
    const enrolled = await fetch(`${url}/v1/users/enrol`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: invite.json.token, publicKey: keys.publicKeyRaw }) });
    assert.equal(enrolled.status, 200, await enrolled.text());
    const other = await ctx.newPage();
    await login(other, url, '#/privacy', JSON.stringify({ keyId: invite.json.userId as string, privateKey: keys.privateKeyPem }));
    await other.locator('[data-testid=forbidden][data-reason=ownership]').first().waitFor();
    assert.match(await other.locator('[data-testid=forbidden]').first().innerText(), /not yours to open[\s\S]*led by someone else/i);
    await shot(other, 'privacy-other-lead-en');

    // A site admin sees the study and its governance, but the model itself is not theirs to download.
    const siteAdmin = await ctx.newPage();
    await login(siteAdmin, url, `#/studies/${studyId}`, keyText('people/arjun.key'));
    await siteAdmin.locator('[data-testid=results]').waitFor();
    assert.equal(await siteAdmin.locator('[data-testid=download-model]').count(), 0);
    assert.equal(await siteAdmin.locator('[data-testid=export-csv]').count(), 1);

    assert.deepEqual(errors, [], 'no script errors and no CSP violation');
  } catch (e) {
    (e as Error).message += `\n--- demo output ---\n${demo.log().slice(-4000)}`;
    throw e;
  } finally {
    await ctx?.close().catch(() => {});
    if (demo.child.exitCode === null) {
      demo.child.kill('SIGTERM');
      await new Promise((r) => demo.child.once('exit', r));
    }
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(profile, { recursive: true, force: true });
  }
});
