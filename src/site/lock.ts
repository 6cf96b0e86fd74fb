/**
 * One agent per state directory. Two agents on one state directory would train the same task twice, both charge
 * the privacy account, and race on the pending queue and the batch stream. `agent.lock` holds the PID of the agent
 * that owns the directory: created with O_EXCL (so exactly one of two starting agents wins), fsynced, and removed
 * when the agent stops. A lock whose PID is no longer alive (the agent was SIGKILLed, the machine rebooted) is stale
 * and taken over. A second agent is refused with one line that names the PID holding the directory.
 *
 * Limits, stated: the check is by PID on this machine, so a state directory on a shared filesystem used from two
 * machines is not protected; a stale lock whose PID was reused by an unrelated process is reported as held, and
 * the message says how to clear it. Between reading a stale lock and removing it another agent could take it; the
 * create that follows is O_EXCL again, so at most one of them proceeds.
 */
import { closeSync, fsyncSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { ensureDir, fsyncDir } from './state.js';

export const LOCK_FILE = 'agent.lock';

export class StateLockedError extends Error {
  constructor(
    readonly dir: string,
    readonly pid: number,
    since: string | undefined,
  ) {
    super(`state directory ${dir} is in use by another site agent (PID ${pid}${since ? `, since ${since}` : ''}): stop that agent first; if PID ${pid} is not a site agent, remove ${join(dir, LOCK_FILE)}`);
  }
}

export interface StateLock {
  readonly file: string;
  /** Removes the lock if it is still this process's. */
  release(): void;
}

interface LockContent {
  pid: number;
  startedAt: string;
}

/** Whether a process with this PID exists (EPERM: it exists, owned by someone else). */
export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readLock(file: string): LockContent | undefined {
  try {
    const j = JSON.parse(readFileSync(file, 'utf8')) as Partial<LockContent>;
    return typeof j.pid === 'number' ? { pid: j.pid, startedAt: String(j.startedAt ?? '') } : undefined;
  } catch {
    return undefined; // gone meanwhile, or cut short by a crash while it was written: not a live agent's lock
  }
}

/** Takes the state directory for this process, or throws StateLockedError naming the PID that holds it. */
export function acquireStateLock(dir: string, pid = process.pid): StateLock {
  ensureDir(dir);
  const file = join(dir, LOCK_FILE);
  for (let attempt = 0; attempt < 5; attempt++) {
    let fd: number;
    try {
      fd = openSync(file, 'wx', 0o600);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const held = readLock(file);
      if (held && held.pid !== pid && pidAlive(held.pid)) throw new StateLockedError(dir, held.pid, held.startedAt || undefined);
      // Stale (its agent is gone) or unreadable: take it over.
      rmSync(file, { force: true });
      continue;
    }
    try {
      const content: LockContent = { pid, startedAt: new Date().toISOString() };
      writeSync(fd, JSON.stringify(content) + '\n');
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    fsyncDir(dir);
    return {
      file,
      release: () => {
        if (readLock(file)?.pid === pid) rmSync(file, { force: true });
      },
    };
  }
  throw new Error(`could not take ${file}: it kept changing (several agents starting at once on one state directory?)`);
}
