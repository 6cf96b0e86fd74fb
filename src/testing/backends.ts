/**
 * The store backends every store-level suite runs against: in-memory, SQLite in a temporary file and
 * PostgreSQL in a throw-away database (required under CI, see pg.ts). One list, so a new backend reaches every
 * suite. `sql` marks the backends a test can also reach with a raw connection (store/raw.ts), e.g. to tamper.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTempDatabase, pgSkipReason } from './pg.js';

export interface StoreBackend {
  name: 'memory' | 'sqlite' | 'postgres';
  sql: boolean;
  /** A reason to skip (PostgreSQL absent outside CI), or false. */
  skip: () => Promise<string | false>;
  open: () => Promise<{ url: string; cleanup: () => Promise<void> }>;
}

export const STORE_BACKENDS: StoreBackend[] = [
  {
    name: 'memory',
    sql: false,
    skip: async () => false,
    open: async () => ({ url: 'memory:', cleanup: async () => {} }),
  },
  {
    name: 'sqlite',
    sql: true,
    skip: async () => false,
    open: async () => {
      const dir = mkdtempSync(join(tmpdir(), 'setu-store-'));
      return { url: join(dir, 'setu.db'), cleanup: async () => rmSync(dir, { recursive: true, force: true }) };
    },
  },
  {
    name: 'postgres',
    sql: true,
    skip: pgSkipReason,
    open: async () => {
      const t = await createTempDatabase();
      return { url: t.url, cleanup: t.drop };
    },
  },
];

export const SQL_BACKENDS = STORE_BACKENDS.filter((b) => b.sql);
