/**
 * Site state writes are durable: the temp file is fsynced before the rename and the directory after it (a power
 * cut then leaves the new file, not an empty one), a cleared pending result's removal is fsynced, and a new study
 * folder's entry too. fsync is observed by wrapping node:fs's fsyncSync (syncBuiltinESMExports updates the ESM
 * binding state.ts imports) and mapping each fsynced descriptor back to its path.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs, { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SiteState, writeAtomic } from './state.js';

function recordFsyncs<T>(fn: () => T): { result: T; synced: string[] } {
  const original = fs.fsyncSync;
  const synced: string[] = [];
  fs.fsyncSync = (fd: number) => {
    synced.push(readlinkSync(`/proc/self/fd/${fd}`));
    original(fd);
  };
  syncBuiltinESMExports();
  try {
    return { result: fn(), synced };
  } finally {
    fs.fsyncSync = original;
    syncBuiltinESMExports();
  }
}

test('writeAtomic fsyncs the file before the rename and its directory after; no temp file is left; mode 600', { skip: process.platform !== 'linux' && 'reads /proc/self/fd' }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-state-'));
  try {
    const f = join(dir, 'privacy-budget.json');
    const { synced } = recordFsyncs(() => writeAtomic(f, '{"a":1}'));
    assert.equal(synced.length, 2, synced.join(', '));
    assert.match(synced[0]!, /privacy-budget\.json\.[0-9a-f]{8}\.tmp$/, 'the temp file, before the rename');
    assert.equal(synced[1], dir, 'then the directory that holds the new name');
    assert.equal(readFileSync(f, 'utf8'), '{"a":1}');
    assert.equal(statSync(f).mode & 0o777, 0o600);
    assert.deepEqual(readdirSync(dir), ['privacy-budget.json']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a new study folder, a queued result and its removal are fsynced in their directories', { skip: process.platform !== 'linux' && 'reads /proc/self/fd' }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-state-'));
  try {
    const state = new SiteState(dir);
    const made = recordFsyncs(() => state.write('study-1', 'stream.json', '{}'));
    assert.ok(made.synced.includes(join(dir, 'studies')), `the studies folder's entry for the new study: ${made.synced.join(', ')}`);
    assert.ok(made.synced.includes(join(dir, 'studies', 'study-1')));
    state.savePending({ taskId: 't1', studyId: 'study-1', contentType: 'application/json', body: new TextEncoder().encode('{}'), commit: [] });
    const cleared = recordFsyncs(() => state.clearPending('t1'));
    assert.deepEqual(cleared.synced, [join(dir, 'pending'), join(dir, 'pending')], 'each removal is made durable');
    assert.deepEqual(readdirSync(join(dir, 'pending')), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
