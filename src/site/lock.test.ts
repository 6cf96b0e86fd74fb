/**
 * One agent per state directory: the lock names its holder's PID, a stale one (its PID gone) or a damaged one is
 * taken over, release removes only one's own lock; and a second `setu site start` on the same state directory
 * exits at once with one line naming the PID of the agent that holds it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import YAML from 'yaml';
import { LOCK_FILE, StateLockedError, acquireStateLock, pidAlive } from './lock.js';
import { SETU_MAIN, freePort, waitFor } from '../testing/processes.js';
import { exited } from '../testing/agents.js';
import { SiteState } from './state.js';
import { generateSigningKeys } from '../protocol/signing.js';

const withDir = (fn: (dir: string) => Promise<void> | void) => async () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-lock-'));
  try {
    await fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
};

/** The PID of a process that has exited (and been reaped). */
async function deadPid(): Promise<number> {
  const c = spawn(process.execPath, ['-e', '0']);
  await exited(c);
  assert.equal(pidAlive(c.pid!), false);
  return c.pid!;
}

test('the lock: held by a live PID it refuses naming it; stale or damaged it is taken over; release is the holder\'s', withDir(async (dir) => {
  const mine = acquireStateLock(dir);
  assert.equal(statSync(mine.file).mode & 0o777, 0o600);
  assert.equal(JSON.parse(readFileSync(mine.file, 'utf8')).pid, process.pid);
  // Another agent (another PID) on the same directory.
  const e = (() => {
    try {
      acquireStateLock(dir, 4_000_000);
    } catch (x) {
      return x;
    }
    return undefined;
  })();
  assert.ok(e instanceof StateLockedError, 'refused');
  assert.equal(e.pid, process.pid);
  assert.match(e.message, new RegExp(`in use by another site agent \\(PID ${process.pid}, since \\d{4}-`));
  assert.doesNotMatch(e.message, /\n/, 'one line');
  // A stale lock (its agent was killed) is taken over.
  mine.release();
  assert.equal(existsSync(join(dir, LOCK_FILE)), false);
  writeFileSync(join(dir, LOCK_FILE), JSON.stringify({ pid: await deadPid(), startedAt: 'yesterday' }));
  const taken = acquireStateLock(dir);
  assert.equal(JSON.parse(readFileSync(taken.file, 'utf8')).pid, process.pid);
  taken.release();
  // A lock cut short by a crash while it was written is no live agent's.
  writeFileSync(join(dir, LOCK_FILE), '{"pi');
  const again = acquireStateLock(dir);
  // Release removes only its own lock: one taken over since is left alone.
  writeFileSync(again.file, JSON.stringify({ pid: 4_000_001, startedAt: 'now' }));
  again.release();
  assert.equal(existsSync(join(dir, LOCK_FILE)), true);
}));

test('a second `setu site start` on the same state directory exits with one line naming the first agent\'s PID', { timeout: 60_000 }, withDir(async (dir) => {
  // An enrolled state directory (credential and key) whose coordinator is down: the first agent waits for it.
  const cfg = join(dir, 'site.yaml');
  writeFileSync(cfg, YAML.stringify({ coordinator: `http://127.0.0.1:${await freePort()}`, stateDir: 'state', datasets: { heart: { format: 'fed-heart-disease', center: 0 } } }));
  mkdirSync(join(dir, 'state'));
  const state = new SiteState(join(dir, 'state'));
  state.saveKey(generateSigningKeys().privateKeyPem);
  state.saveCredential({ coordinator: 'http://127.0.0.1:1', siteId: 'site-1', siteName: 'hospital-a' });
  const first = spawn(process.execPath, [SETU_MAIN, 'site', 'start', '--config', cfg], { stdio: 'ignore' });
  try {
    await waitFor('the first agent to hold the state directory', async () => (existsSync(join(dir, 'state', LOCK_FILE)) ? true : undefined), 30_000, 20);
    const second = spawn(process.execPath, [SETU_MAIN, 'site', 'start', '--config', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    second.stderr.on('data', (d: Buffer) => (err += d.toString()));
    await exited(second);
    assert.equal(second.exitCode, 1);
    const lines = err.trim().split('\n');
    assert.equal(lines.length, 1, err);
    assert.match(lines[0]!, new RegExp(`state directory .*state is in use by another site agent \\(PID ${first.pid}, since `));
    assert.equal(first.exitCode, null, 'the first agent runs on');
    assert.equal(JSON.parse(readFileSync(join(dir, 'state', LOCK_FILE), 'utf8')).pid, first.pid, "the refused agent left the first one's lock alone");
  } finally {
    first.kill('SIGTERM');
    await exited(first);
  }
  assert.equal(existsSync(join(dir, 'state', LOCK_FILE)), false, 'a stopped agent removes its lock');
}));
