/**
 * An operator's mistakes read as one line on stderr, never a stack trace: an unreachable coordinator, an untrusted
 * certificate, a CA file that is not there, a failing (5xx) coordinator, a site agent that is not enrolled or whose
 * key was revoked. Real processes: the `setu` binary against a coordinator started here.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import YAML from 'yaml';
import { sql } from 'kysely';
import { openRawDatabase } from '../store/raw.js';
import { startCoordinator, type RunningCoordinator } from '../coordinator/start.js';
import { SETU_MAIN, adminOf, freePort } from '../testing/processes.js';
import type { InviteResponse } from '../protocol/api.js';

function setu(args: string[], timeoutMs = 40_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [SETU_MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SETU_KEY_FILE: '', SETU_COORDINATOR: '' } });
  let stdout = '', stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d));
  child.stderr.on('data', (d: Buffer) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  return new Promise((res) => child.on('close', (code) => (clearTimeout(timer), res({ code, stdout, stderr }))));
}

/** One line, `setu: …`, and nothing that looks like a stack trace. */
function oneLine(r: { stderr: string }, pattern: RegExp): void {
  const lines = r.stderr.trim().split('\n').filter((l) => !/^\d\d:\d\d:\d\d |^\{"level":/.test(l)); // the agent's own log lines (pino JSON)
  assert.equal(lines.length, 1, `one line on stderr:\n${r.stderr}`);
  assert.match(lines[0]!, /^setu: /);
  assert.match(lines[0]!, pattern);
  assert.doesNotMatch(r.stderr, /\n\s+at |Error: |node:internal/, r.stderr);
}

describe('operator mistakes are one readable line', () => {
  let dir: string;
  let c: RunningCoordinator;
  let tls: RunningCoordinator;
  let adminKey: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'setu-failures-'));
    c = await startCoordinator({ dataDir: join(dir, 'coord'), port: 0, tickMs: 100 });
    adminKey = join(dir, 'coord', 'admin.key');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
    tls = await startCoordinator({ dataDir: join(dir, 'tls'), port: 0, https: { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) } });
  });
  after(async () => {
    await c.close();
    await tls.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('an unreachable coordinator', async () => {
    const port = await freePort();
    const r = await setu(['site', 'list', '--coordinator', `http://127.0.0.1:${port}`, '--key-file', adminKey]);
    assert.equal(r.code, 1);
    oneLine(r, new RegExp(`coordinator unreachable at http://127\\.0\\.0\\.1:${port}: connection refused.*; is it running`));
    // At a hospital's terminal too: enrolling against a coordinator that is not there says so, and stops.
    const d = join(dir, 'enrol-nowhere');
    mkdirSync(d, { recursive: true });
    writeFileSync(join(d, 'site.yaml'), YAML.stringify({ coordinator: `http://127.0.0.1:${port}`, datasets: { heart: { format: 'fed-heart-disease', center: 0 } } }));
    const e = await setu(['site', 'enrol', '--config', join(d, 'site.yaml'), '--token', 'inv_whatever_long_enough']);
    assert.equal(e.code, 1);
    oneLine(e, /coordinator unreachable at .*connection refused/);
  });

  it('an untrusted certificate, and a CA file that is not there', async () => {
    const r = await setu(['site', 'list', '--coordinator', tls.url, '--key-file', join(dir, 'tls', 'admin.key')]);
    assert.equal(r.code, 1);
    oneLine(r, /TLS: .*not trusted; .*--ca-file/);
    const missing = await setu(['site', 'list', '--coordinator', tls.url, '--key-file', join(dir, 'tls', 'admin.key'), '--ca-file', join(dir, 'nope.pem')]);
    assert.equal(missing.code, 2);
    oneLine(missing, /--ca-file .*nope\.pem: cannot read the CA certificate \(ENOENT\)/);
    const ok = await setu(['site', 'list', '--coordinator', tls.url, '--key-file', join(dir, 'tls', 'admin.key'), '--ca-file', join(dir, 'cert.pem'), '--json']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(JSON.parse(ok.stdout), []);
  });

  it('a site config whose caFile is not there', async () => {
    const d = join(dir, 'no-ca');
    mkdirSync(d, { recursive: true });
    writeFileSync(join(d, 'site.yaml'), YAML.stringify({ coordinator: tls.url, caFile: 'ca.pem', datasets: { heart: { format: 'fed-heart-disease', center: 0 } } }));
    const r = await setu(['site', 'start', '--config', join(d, 'site.yaml'), '--token', 'inv_whatever_long_enough']);
    assert.equal(r.code, 2);
    oneLine(r, /site\.yaml: \/caFile: .*ca\.pem does not exist/);
  });

  it('a site agent that is not enrolled, and one whose key was revoked', async () => {
    const d = join(dir, 'site-a');
    mkdirSync(d, { recursive: true });
    const cfg = join(d, 'site.yaml');
    writeFileSync(cfg, YAML.stringify({ coordinator: c.url, pollWaitMs: 1000, datasets: { heart: { format: 'fed-heart-disease', center: 0 } } }));
    const unenrolled = await setu(['site', 'start', '--config', cfg]);
    assert.equal(unenrolled.code, 1);
    oneLine(unenrolled, /site is not enrolled: run `setu site enrol/);
    const inv = await adminOf(c).json<InviteResponse>('POST', '/v1/invites', { siteName: 'site-a' });
    const enrolled = await setu(['site', 'enrol', '--config', cfg, '--token', inv.token]);
    assert.equal(enrolled.code, 0, enrolled.stderr);
    await adminOf(c).json('POST', '/v1/sites/site-a/revoke', {});
    const revoked = await setu(['site', 'start', '--config', cfg]);
    assert.equal(revoked.code, 1);
    oneLine(revoked, /site site-a: the coordinator refused this site's key: .*revoked.*enrol it again with a new invite/);
    const reused = await setu(['site', 'list', '--coordinator', c.url, '--key-file', join(dir, 'nokey.json')]);
    assert.equal(reused.code, 2);
    oneLine(reused, /nokey\.json/);
  });

  it('a failing coordinator (HTTP 500) is reported with its message, at once', async () => {
    // A real fault: the coordinator's table of sites is gone, so listing them fails inside the coordinator.
    const raw = await openRawDatabase(join(dir, 'coord', 'setu.db'));
    await sql`DROP TABLE site_cohorts`.execute(raw);
    await sql`ALTER TABLE sites RENAME TO sites_gone`.execute(raw);
    const started = Date.now();
    const r = await setu(['site', 'list', '--coordinator', c.url, '--key-file', adminKey]);
    await sql`ALTER TABLE sites_gone RENAME TO sites`.execute(raw);
    await raw.destroy();
    assert.equal(r.code, 1);
    oneLine(r, new RegExp(`the coordinator at ${c.url.replace(/[.]/g, '\\.')} failed: HTTP 500: internal error`));
    assert.ok(Date.now() - started < 8000, 'a 500 is not retried for the whole give-up window');
  });
});
