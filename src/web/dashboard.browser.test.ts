/**
 * The dashboard in a real browser: Debian's Chromium driven by playwright-core (never a downloaded
 * browser). Runs `setu demo --dashboard --dp-epsilon 8` as a child process (the four-hospital federation
 * over real HTTP), logs in with the admin's key file, watches the study's rounds advance over the live
 * stream and its charts draw, switches to Japanese, sees every site's privacy spend within budget, saves
 * screenshots, and checks that a study lead gets 403 from the audit API and that the audit page says so.
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
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { generateSigningKeys, signRequest } from '../protocol/signing.js';

const CHROMIUM = process.env['SETU_CHROMIUM'] ?? '/usr/bin/chromium';
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
    const timer = setTimeout(() => rej(new Error(`the demo did not start its study within 60 s:\n${out}`)), 60_000);
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

test('dashboard: live study charts, languages, role-dependent audit (Chromium)', { skip, timeout: 240_000 }, async (t) => {
  assert.ok(existsSync(CHROMIUM), `Chromium is required in CI: no ${CHROMIUM} (apt-get install -y chromium; never a downloaded browser)`);
  const dataDir = mkdtempSync(join(tmpdir(), 'setu-dash-'));
  const profile = mkdtempSync(join(tmpdir(), 'setu-chromium-'));
  mkdirSync(ARTIFACTS, { recursive: true });
  const demo = startDemo(dataDir);
  let ctx: BrowserContext | undefined;
  try {
    const { url, studyId } = await demo.ready;
    const adminKeyText = readFileSync(join(dataDir, 'coordinator', 'admin.key'), 'utf8');
    const adminKey = JSON.parse(adminKeyText) as KeyFile;

    // The API side of the dashboard: it is described at /openapi.json, including the live stream.
    const openapi = (await (await fetch(`${url}/openapi.json`)).json()) as { paths: Record<string, unknown> };
    for (const p of ['/v1/studies/{id}', '/v1/sites', '/v1/events', '/v1/events/token']) assert.ok(openapi.paths[p], `openapi.json lacks ${p}`);

    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: { width: 1400, height: 1000 },
    });
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
    await ctx.exposeFunction('__cspViolation', (v: string) => errors.push(`CSP violation: ${v}`));
    await ctx.addInitScript(() => {
      const report = (window as unknown as { __cspViolation: (v: string) => void }).__cspViolation;
      document.addEventListener('securitypolicyviolation', (e) => report(`${e.violatedDirective} blocked ${e.blockedURI || '(inline)'}`));
    });
    const page = await ctx.newPage();
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => {
      if (/Content Security Policy/i.test(m.text())) errors.push(m.text());
    });
    await login(page, url, `#/studies/${studyId}`, adminKeyText);
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
    assert.ok(later < ROUNDS || first < ROUNDS, 'the study was still running while watched');

    // Charts: the data points are there and Chart.js drew the first site's line (#1f77b4) and the global one (#111).
    const points = Number(await page.locator('#chart-loss').getAttribute('data-points'));
    assert.ok(points >= 5 * later - 5, `loss chart has ${points} points after ${later} rounds (4 sites + global)`);
    for (const chart of ['#chart-loss canvas', '#chart-accuracy canvas']) {
      const [site, global] = [await pixelsNear(page, chart, [31, 119, 180]), await pixelsNear(page, chart, [17, 17, 17])];
      t.diagnostic(`${chart}: ${site} pixels of the first site's colour, ${global} of the global model's`);
      assert.ok(site > 40, `${chart}: the first site's line is drawn (${site} pixels)`);
      assert.ok(global > 80, `${chart}: the global model's line is drawn (${global} pixels)`);
    }
    assert.ok((await pixelsNear(page, '#chart-participation canvas', [42, 157, 143])) > 200, 'participation bars are drawn');
    const shotEn = join(ARTIFACTS, 'dashboard-study-en.png');
    await page.screenshot({ path: shotEn, fullPage: true });
    t.diagnostic(`screenshot: ${shotEn}`);
    console.log(`dashboard screenshot: ${shotEn}`);

    // Languages: the switcher turns every catalogue text Japanese.
    await page.locator('[data-testid=lang]').selectOption('ja');
    assert.equal(await page.evaluate(() => document.documentElement.lang), 'ja');
    assert.equal(await page.locator('[data-nav=studies]').innerText(), '研究');
    assert.match(await page.locator('[data-testid=round-progress]').innerText(), /ラウンド \d+ \/ 60/);
    assert.match(await page.locator('#chart-loss figcaption').innerText(), /学習損失/);
    const shotJa = join(ARTIFACTS, 'dashboard-study-ja.png');
    await page.screenshot({ path: shotJa, fullPage: true });
    console.log(`dashboard screenshot: ${shotJa}`);

    // Overview: the four hospitals are listed with their state; compute and privacy pages render or say why not.
    await page.goto(`${url}/#/overview`);
    await page.locator('[data-testid=site-summary]').waitFor({ timeout: 15_000 });
    assert.equal(await page.locator('tr[data-site]').count(), 4);
    for (const name of ['cleveland', 'hungarian', 'switzerland', 'va']) assert.match(await page.locator(`tr[data-site=${name}]`).innerText(), /オンライン/);
    const shotOverview = join(ARTIFACTS, 'dashboard-overview-ja.png');
    await page.screenshot({ path: shotOverview, fullPage: true });
    console.log(`dashboard screenshot: ${shotOverview}`);

    // Privacy: the demo trains with DP-SGD (--dp-epsilon 8); every site's spend so far is shown within its budget.
    await page.goto(`${url}/#/privacy`);
    await page.locator('[data-testid=privacy-table] tr[data-site]').first().waitFor({ timeout: 15_000 });
    const meters = await page.locator('[data-testid=privacy-table] meter').evaluateAll((ms) => ms.map((m) => [(m as HTMLMeterElement).value, (m as HTMLMeterElement).max]));
    assert.equal(meters.length, 4, 'one privacy row per site');
    for (const [spent, budget] of meters) assert.ok(spent! > 0 && spent! <= budget! && budget === 8, `ε spent ${spent} within budget ${budget}`);

    // The admin's role covers the audit: the page shows the chain and that it verifies.
    await page.goto(`${url}/#/audit`);
    await page.locator('[data-testid=audit-verify]').waitFor({ timeout: 15_000 });
    assert.match(await page.locator('[data-testid=audit-verify]').getAttribute('class').then(String), /good/);
    assert.ok((await page.locator('[data-testid=audit-table] tbody tr').count()) > 0);

    // A study lead: created and enrolled through the API like any user, with a key made here.
    const invite = await signedCall(url, adminKey, 'POST', '/v1/users', { name: 'lead-browser-test', role: 'study_lead' });
    assert.equal(invite.status, 200, JSON.stringify(invite.json));
    const keys = generateSigningKeys();
    const enrolled = await fetch(`${url}/v1/users/enrol`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: invite.json.token, publicKey: keys.publicKeyRaw }) });
    assert.equal(enrolled.status, 200, await enrolled.text());
    const leadKey: KeyFile = { keyId: invite.json.userId as string, privateKey: keys.privateKeyPem };
    const audit = await signedCall(url, leadKey, 'GET', '/v1/audit');
    assert.equal(audit.status, 403, `a study lead reading /v1/audit: ${JSON.stringify(audit.json)}`);
    assert.equal((await signedCall(url, leadKey, 'GET', '/v1/audit/verify')).status, 403);

    // In the browser (a new tab: the credential is per tab), the audit page says the role does not cover it.
    const lead = await ctx.newPage();
    lead.on('pageerror', (e) => errors.push(e.message));
    await login(lead, url, '#/audit', JSON.stringify(leadKey));
    assert.match(await lead.locator('[data-testid=role]').innerText(), /研究責任者/); // the language choice persisted
    await lead.locator('[data-testid=forbidden]').waitFor({ timeout: 15_000 });
    assert.match(await lead.locator('[data-testid=forbidden]').innerText(), /ロールでは監査ページを閲覧できません/);
    await lead.locator('[data-testid=lang]').selectOption('en');
    assert.match(await lead.locator('[data-testid=forbidden]').innerText(), /Your role does not cover the Audit page/);
    assert.equal(await lead.locator('[data-testid=audit-table]').count(), 0, 'no audit entries are shown to a study lead');
    // The same lead still watches studies.
    await lead.goto(`${url}/#/studies/${studyId}`);
    await lead.locator('#chart-loss').waitFor({ timeout: 15_000 });
    const shotLead = join(ARTIFACTS, 'dashboard-audit-study-lead.png');
    await lead.goto(`${url}/#/audit`);
    await lead.locator('[data-testid=forbidden]').waitFor({ timeout: 15_000 });
    await lead.screenshot({ path: shotLead });
    console.log(`dashboard screenshot: ${shotLead}`);

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
