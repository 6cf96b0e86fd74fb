/**
 * Driver errors → StoreConflict / StoreUnavailable by their codes, on errors the real drivers raise: PostgreSQL's
 * unique violation and statement timeout, a refused connection, SQLite's unique violation and a busy database; and the
 * SQLite store's disk reserve (disk-guard.ts: libsql aborts the process on SQLITE_FULL, so writes stop before it).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import Database from 'libsql';
import { classifySqlError } from './sql-errors.js';
import { openStore, StoreConflict, StoreUnavailable } from './store.js';
import { PG_BASE, pgSkipReason } from '../testing/pg.js';
import { minFreeBytes } from './disk-guard.js';

async function thrown(f: () => unknown): Promise<unknown> {
  try {
    await f();
  } catch (e) {
    return e;
  }
  throw new Error('expected a throw');
}

describe('driver errors by code', async () => {
  const pgSkip = await pgSkipReason();

  it('PostgreSQL: 23505 is a conflict, a statement timeout is transient, other errors pass through', { skip: pgSkip }, async () => {
    const c = new pg.Client({ connectionString: PG_BASE });
    await c.connect();
    try {
      await c.query('create temp table u (k text primary key)');
      await c.query(`insert into u values ('a')`);
      assert.ok(classifySqlError(await thrown(() => c.query(`insert into u values ('a')`)), 'postgres') instanceof StoreConflict);
      await c.query('set statement_timeout = 20');
      assert.ok(classifySqlError(await thrown(() => c.query('select pg_sleep(1)')), 'postgres') instanceof StoreUnavailable);
      await c.query('set statement_timeout = 0');
      const syntax = await thrown(() => c.query('selec 1'));
      assert.equal(classifySqlError(syntax, 'postgres'), syntax, 'a bug is not retried as if the database were down');
    } finally {
      await c.end();
    }
  });

  it('PostgreSQL: a refused connection is StoreUnavailable, at open too', async () => {
    const refused = await thrown(() => new pg.Client({ connectionString: 'postgres://postgres@127.0.0.1:1/x' }).connect());
    assert.ok(classifySqlError(refused, 'postgres') instanceof StoreUnavailable);
    await assert.rejects(openStore('postgres://postgres@127.0.0.1:1/x'), StoreUnavailable);
  });

  it('SQLite: a unique violation is a conflict, a busy database is transient', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'setu-sqlerr-'));
    const a = new Database(join(dir, 'x.db'));
    const b = new Database(join(dir, 'x.db'));
    try {
      a.exec('PRAGMA journal_mode=WAL; create table u (k text primary key)');
      a.exec(`insert into u values ('a')`);
      assert.ok(classifySqlError(await thrown(() => a.exec(`insert into u values ('a')`)), 'sqlite') instanceof StoreConflict);
      a.exec('begin immediate');
      b.exec('PRAGMA busy_timeout=0');
      assert.ok(classifySqlError(await thrown(() => b.exec(`insert into u values ('b')`)), 'sqlite') instanceof StoreUnavailable);
      a.exec('rollback');
      const missing = await thrown(() => a.exec('select * from nope'));
      assert.equal(classifySqlError(missing, 'sqlite'), missing);
    } finally {
      a.close();
      b.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('SQLite: under its disk reserve the store refuses writes with StoreUnavailable, keeps reading, and writes again when there is room', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'setu-reserve-'));
    const db = join(dir, 'setu.db');
    try {
      const first = await openStore(db);
      await first.setKv('before', 'yes');
      await first.close();
      process.env.SETU_SQLITE_MIN_FREE_MB = String(10 ** 11); // more than any disk has: the real statfs says "under"
      const full = await openStore(db).finally(() => delete process.env.SETU_SQLITE_MIN_FREE_MB);
      try {
        assert.equal(await full.getKv('before'), 'yes', 'reads go on');
        await assert.rejects(full.setKv('after', 'no'), (e: unknown) => e instanceof StoreUnavailable && /MiB free, under the .* MiB the store keeps in reserve/.test((e as Error).message));
        await assert.rejects(full.transaction(async (tx) => tx.createUser({ id: 'u', name: 'u', role: 'auditor', institution: null, public_key: null, status: 'invited', created_by: 'a', created_at: 1 })), StoreUnavailable);
        assert.equal(await full.getUser('u'), undefined);
      } finally {
        await full.close();
      }
      const roomy = await openStore(db);
      await roomy.setKv('after', 'yes');
      assert.equal(await roomy.getKv('after'), 'yes');
      await roomy.close();
      assert.throws(() => minFreeBytes({ SETU_SQLITE_MIN_FREE_MB: 'lots' }), /SETU_SQLITE_MIN_FREE_MB must be a whole number of MiB, got "lots"/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
