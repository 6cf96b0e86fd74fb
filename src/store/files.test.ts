/**
 * The SQLite store's files are the owner's only: a data directory the store creates is 700, and the database
 * with its -wal and -shm files 600, also when the process umask would allow more; an older store whose file was
 * readable by others is tightened when opened.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore } from './store.js';

const mode = (p: string) => statSync(p).mode & 0o777;

describe('SQLite files', () => {
  it('creates the directory 700 and the database, -wal and -shm 600, whatever the umask', async () => {
    const root = mkdtempSync(join(tmpdir(), 'setu-files-'));
    const old = process.umask(0o022);
    try {
      const dir = join(root, 'data', 'coordinator');
      const db = join(dir, 'setu.db');
      const store = await openStore(db);
      await store.setKv('written', 'yes'); // a write: the WAL and its index exist now
      for (const f of [db, `${db}-wal`, `${db}-shm`]) {
        assert.ok(existsSync(f), `${f} exists`);
        assert.equal(mode(f).toString(8), '600', `${f} is the owner's only`);
      }
      assert.equal(mode(dir).toString(8), '700');
      assert.equal(mode(join(root, 'data')).toString(8), '700');
      await store.close();
    } finally {
      process.umask(old);
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('tightens an existing database that others could read', async () => {
    const root = mkdtempSync(join(tmpdir(), 'setu-files-'));
    try {
      const db = join(root, 'setu.db');
      await (await openStore(db)).close();
      chmodSync(db, 0o644);
      const store = await openStore(`sqlite:${db}`);
      await store.setKv('k', 'v');
      assert.equal(mode(db).toString(8), '600');
      assert.equal(mode(`${db}-wal`).toString(8), '600');
      await store.close();
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
