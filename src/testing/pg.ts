/**
 * Test helper: a fresh, throw-away PostgreSQL database per test file.
 * SETU_TEST_PG names the server (default: the local cluster with trust auth). Under CI the
 * server must be there: a missing PostgreSQL fails the run instead of skipping it.
 */
import pg from 'pg';
import { randomBytes } from 'node:crypto';

export const PG_BASE = process.env.SETU_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test';

export async function pgAvailable(): Promise<boolean> {
  const c = new pg.Client({ connectionString: PG_BASE, connectionTimeoutMillis: 2000 });
  try {
    await c.connect();
    await c.query('select 1');
    return true;
  } catch {
    return false;
  } finally {
    await c.end().catch(() => {});
  }
}

/** Returns a skip reason (string) when PostgreSQL is absent outside CI; throws when absent in CI. */
export async function pgSkipReason(): Promise<string | false> {
  if (await pgAvailable()) return false;
  if (process.env.CI) throw new Error(`PostgreSQL is required in CI but ${PG_BASE} is not reachable`);
  return `PostgreSQL not reachable at ${PG_BASE}`;
}

/** A fresh database on the server of `base` (default SETU_TEST_PG), dropped by `drop`. */
export async function createTempDatabase(base = PG_BASE): Promise<{ url: string; drop: () => Promise<void> }> {
  const name = `setu_t_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: base });
  await admin.connect();
  await admin.query(`create database ${name}`);
  await admin.end();
  const u = new URL(base);
  u.pathname = `/${name}`;
  return {
    url: u.toString(),
    drop: async () => {
      const c = new pg.Client({ connectionString: base });
      await c.connect();
      await c.query(`drop database if exists ${name} with (force)`);
      await c.end();
    },
  };
}
