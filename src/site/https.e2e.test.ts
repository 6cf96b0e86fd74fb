/**
 * The coordinator over HTTPS with a certificate made here by openssl: a site agent process that trusts it
 * through its config's caFile enrols (registering the key it made, kept mode 600) and polls with signed
 * requests; one without the CA is refused by TLS, at once and with a message naming the fix.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import YAML from 'yaml';
import { startCoordinator, type RunningCoordinator } from '../coordinator/start.js';
import { HttpClient } from './http.js';
import { SETU_MAIN, runSetu, stopAll, waitFor } from '../testing/processes.js';
import type { InviteResponse } from '../protocol/api.js';

describe('HTTPS coordinator and a site agent that trusts its CA', () => {
  let dir: string;
  let c: RunningCoordinator;
  let admin: HttpClient;
  const children: ChildProcess[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'setu-https-'));
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
    c = await startCoordinator({ dataDir: join(dir, 'coord'), port: 0, tickMs: 100, https: { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) } });
    assert.match(c.url, /^https:\/\//);
    admin = new HttpClient({ baseUrl: c.url, ca: readFileSync(join(dir, 'cert.pem')), signer: { keyId: c.adminKey!.keyId, privateKey: c.adminKey!.privateKey }, giveUpAfterMs: 5000 });
  });
  after(async () => {
    await stopAll(children);
    await c.close();
    rmSync(dir, { recursive: true, force: true });
  });

  // Asynchronous on purpose: the coordinator runs in this process, so blocking on the child would starve it.
  function setu(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
    const child = spawn(process.execPath, [SETU_MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    return new Promise((res) => child.on('close', (status) => (clearTimeout(timer), res({ status, stdout, stderr }))));
  }

  function siteConfig(name: string, withCa: boolean): string {
    const d = join(dir, name);
    mkdirSync(d, { recursive: true });
    writeFileSync(join(d, 'site.yaml'), YAML.stringify({ coordinator: c.url, stateDir: 'state', pollWaitMs: 2000, ...(withCa ? { caFile: '../cert.pem' } : {}), datasets: { heart: { format: 'fed-heart-disease', center: 0 } } }));
    return join(d, 'site.yaml');
  }

  it('refuses plain HTTP on the TLS port and a client that lacks the CA', async () => {
    await assert.rejects(new HttpClient({ baseUrl: c.url.replace('https:', 'http:'), giveUpAfterMs: 500, maxDelayMs: 100 }).json('GET', '/v1/health'));
    const inv = await admin.json<InviteResponse>('POST', '/v1/invites', { siteName: 'no-ca' });
    const started = Date.now();
    const r = await setu(['site', 'enrol', '--config', siteConfig('no-ca', false), '--token', inv.token]);
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /TLS: .*caFile/);
    assert.ok(Date.now() - started < 20_000, 'a certificate error is not retried');
    assert.equal((await admin.json<unknown[]>('GET', '/v1/sites')).length, 0);
  });

  it('enrols and polls with signed requests over TLS when the config names the CA', async () => {
    const inv = await admin.json<InviteResponse>('POST', '/v1/invites', { siteName: 'tls-site' });
    const cfg = siteConfig('tls-site', true);
    const r = await setu(['site', 'enrol', '--config', cfg, '--token', inv.token]);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    const state = join(dir, 'tls-site', 'state');
    assert.equal(statSync(join(state, 'site.key')).mode & 0o777, 0o600);
    const cred = JSON.parse(readFileSync(join(state, 'credential.json'), 'utf8')) as Record<string, string>;
    assert.deepEqual(Object.keys(cred).sort(), ['coordinator', 'siteId', 'siteName'], 'no bearer secret is kept');
    const site = (await c.store.getSite(cred.siteId!))!;
    assert.equal(site.status, 'active');
    const enrolledAt = site.last_seen_at!;
    // The agent process polls (signed) and declares its cohort: both show in the store.
    children.push(runSetu(['site', 'start', '--config', cfg], join(dir, 'tls-site', 'agent.log')));
    await waitFor('the agent to declare its cohort', async () => (Object.keys(await c.store.listCohorts(cred.siteId!)).length ? true : undefined), 20_000);
    await waitFor('a signed poll', async () => (((await c.store.getSite(cred.siteId!))!.last_seen_at ?? 0) > enrolledAt ? true : undefined), 20_000);
    assert.doesNotMatch(readFileSync(join(dir, 'tls-site', 'agent.log'), 'utf8'), /refused|TLS/);
  });
});
