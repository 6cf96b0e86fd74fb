/**
 * The agent says locally what it is doing (issue 10, "a site agent exposes its own status"): status.json in its
 * state directory (last task and how it ended, last contact, budget left per study, results waiting), read by
 * `setu site status` as a table or JSON, also once the agent is stopped or killed. Its log is pino JSON at
 * --log-level (or SETU_LOG_LEVEL), and no line holds the invite token, the site's private key or its noise secret.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import YAML from 'yaml';
import { writeFileSync, mkdirSync } from 'node:fs';
import { startCoordinator, type RunningCoordinator } from '../coordinator/start.js';
import { SETU_MAIN, adminOf, studyLeadClient, waitFor } from '../testing/processes.js';
import { exited, runSetuCommand, type StudyDetail } from '../testing/agents.js';
import { readStatus, type AgentStatusFile } from './status.js';
import { NOISE_SECRET_FILE } from './release.js';

function agent(cfg: string, args: string[], env: Record<string, string> = {}) {
  const child = spawn(process.execPath, [SETU_MAIN, 'site', 'start', '--config', cfg, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  const out = { text: '' };
  child.stdout.on('data', (d: Buffer) => (out.text += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out.text += d.toString()));
  return { child, out };
}

test('status.json and `setu site status` show the last task, contact and budget left; the log is leveled pino with no secret', { timeout: 180_000 }, async () => {
  const root = mkdtempSync(join(tmpdir(), 'setu-status-'));
  let c: RunningCoordinator | undefined;
  const running: ReturnType<typeof agent>[] = [];
  try {
    c = await startCoordinator({ dataDir: join(root, 'coord'), port: 0, tickMs: 50, maxWaitMs: 2000 });
    const admin = adminOf(c);
    const dir = join(root, 'site');
    mkdirSync(dir);
    const cfg = join(dir, 'site.yaml');
    writeFileSync(cfg, YAML.stringify({ coordinator: c.url, stateDir: 'state', pollWaitMs: 1000, datasets: { heart: { format: 'fed-heart-disease', center: 1 } } }));
    const stateDir = join(dir, 'state');
    const inv = await admin.json<{ token: string }>('POST', '/v1/invites', { siteName: 'hospital-s' });
    // Enrolled by `site start --token` itself, at the most talkative level.
    const first = agent(cfg, ['--token', inv.token, '--log-level', 'debug']);
    running.push(first);
    await waitFor('the site to enrol', async () => ((await admin.json<unknown[]>('GET', '/v1/sites')).length === 1 ? true : undefined), 30_000);
    const lead = await studyLeadClient(admin, c.url);
    const { id } = await lead.json<{ id: string }>('POST', '/v1/studies', {
      name: 'status', dataset: 'heart', model: { kind: 'logistic', inputDim: 13 }, strategy: { name: 'FedAvg' }, rounds: 2, minSites: 1,
      fit: { localSteps: 20, batchSize: 4, optimizer: { kind: 'sgd', lr: 0.05 } }, roundTimeoutSeconds: 60, seed: 5,
      privacy: { dp: { level: 'sample', epsilon: 3, delta: 1e-3, clipNorm: 1 } },
    });
    await lead.json('POST', `/v1/studies/${id}/start`, {});
    const done = await waitFor('the study to end', async () => {
      const s = await lead.json<StudyDetail>('GET', `/v1/studies/${id}`);
      return ['completed', 'failed', 'stopped'].includes(s.status) ? s : undefined;
    }, 120_000, 100);
    assert.equal(done.status, 'completed', done.error ?? '');
    const status = await waitFor('the status to show the final evaluation sent', async () => {
      const s = readStatus(stateDir);
      return s?.lastTask?.kind === 'evaluate' && s.lastTask.outcome === 'sent' ? s : undefined;
    }, 20_000, 50);
    assert.equal(status.pid, first.child.pid);
    assert.equal(status.siteName, 'hospital-s');
    assert.equal(status.state, 'running');
    assert.equal(status.pendingResults, 0);
    assert.ok(status.lastContact && Date.now() - Date.parse(status.lastContact) < 60_000, 'a recent contact');
    const b = status.budgets[id]!;
    assert.equal(b.charges, 2, 'two DP rounds charged');
    assert.equal(b.epsilon, 3);
    assert.ok(b.spent > 0 && b.spent <= 3 && Math.abs(b.left - (3 - b.spent)) < 1e-9, JSON.stringify(b));

    // The operator's view, as a table and as JSON.
    const table = await runSetuCommand(['site', 'status', '--state-dir', stateDir]);
    assert.match(table, /site hospital-s \(site-[0-9a-f]+\) · coordinator http:\/\/127\.0\.0\.1:\d+/);
    assert.match(table, new RegExp(`agent: running \\(PID ${first.child.pid}`));
    assert.match(table, new RegExp(`last task: ${id}\\.r3\\.\\S+ \\(evaluate, round 3\\) sent`));
    assert.match(table, new RegExp(`${id}\\s+3\\s+${b.spent.toFixed(4)}\\s+${b.left.toFixed(4)}\\s+0\\.001\\s+2`));
    const json = JSON.parse(await runSetuCommand(['site', 'status', '--config', cfg, '--json'])) as AgentStatusFile;
    assert.equal(json.budgets[id]!.charges, 2);
    assert.match(await runSetuCommand(['site', 'status', '--help']), /--state-dir DIR[\s\S]*--json/);

    // Stopped cleanly, it says so; killed, the dead PID says so.
    first.child.kill('SIGTERM');
    await exited(first.child);
    assert.equal(readStatus(stateDir)!.state, 'stopped');
    assert.match(await runSetuCommand(['site', 'status', '--state-dir', stateDir]), /agent: stopped/);
    // --log-level warn: no info line while it starts and polls (it writes a fresh status once it has polled).
    const quiet = agent(cfg, ['--log-level', 'warn']);
    running.push(quiet);
    await waitFor('the quiet agent to poll', async () => {
      const s = readStatus(stateDir);
      return s && s.pid === quiet.child.pid && s.lastContact && Date.parse(s.lastContact) > Date.parse(s.startedAt) ? true : undefined;
    }, 30_000, 50);
    quiet.child.kill('SIGKILL');
    await exited(quiet.child);
    assert.match(await runSetuCommand(['site', 'status', '--state-dir', stateDir]), /agent: not running \(killed\?\)/);
    assert.doesNotMatch(quiet.out.text, /"level":30/, quiet.out.text);
    // SETU_LOG_LEVEL is the default when no flag is given.
    const env = agent(cfg, [], { SETU_LOG_LEVEL: 'error' });
    running.push(env);
    await waitFor('the third agent to poll', async () => {
      const s = readStatus(stateDir);
      return s && s.pid === env.child.pid && s.lastContact && Date.parse(s.lastContact) > Date.parse(s.startedAt) ? true : undefined;
    }, 30_000, 50);
    env.child.kill('SIGTERM');
    await exited(env.child);
    assert.doesNotMatch(env.out.text, /"level":(30|40)/);

    // The talkative run logged: pino lines, and none with a secret.
    const lines = first.out.text.trim().split('\n');
    assert.ok(lines.length > 5, first.out.text);
    for (const l of lines) assert.doesNotThrow(() => JSON.parse(l), `a pino JSON line: ${l}`);
    assert.ok(lines.some((l) => /task \S+: training \(dp-sgd, round 1\)/.test(l)));
    const all = first.out.text + quiet.out.text + env.out.text;
    assert.ok(!all.includes(inv.token), 'the invite token is never logged');
    const pem = readFileSync(join(stateDir, 'site.key'), 'utf8');
    for (const line of pem.split('\n').filter((x) => x.length >= 16 && !x.startsWith('-----'))) assert.ok(!all.includes(line), 'no line of the private key is logged');
    const secret = readFileSync(join(stateDir, NOISE_SECRET_FILE));
    for (const enc of ['hex', 'base64', 'base64url'] as const) assert.ok(!all.includes(secret.toString(enc)), `the noise secret (${enc}) is never logged`);
    assert.ok(!JSON.stringify(readStatus(stateDir)).includes(secret.toString('hex')) && !JSON.stringify(readStatus(stateDir)).includes('PRIVATE KEY'), 'nor is it in status.json');
  } finally {
    for (const a of running) if (a.child.exitCode === null && a.child.signalCode === null) {
      a.child.kill('SIGKILL');
      await exited(a.child);
    }
    await c?.close().catch(() => {});
    rmSync(root, { recursive: true, force: true });
  }
});
