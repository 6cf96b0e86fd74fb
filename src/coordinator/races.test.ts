/**
 * Identical creations raced over HTTP, on SQLite and PostgreSQL: ten concurrent requests to create one user
 * (one name) or one institution (one id) give exactly one 201 and nine 409s, never a 500. The check-then-insert
 * in the routes cannot stop the race; the store's unique keys do, and a taken key is StoreConflict → 409.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCoordinator, type RunningCoordinator } from './start.js';
import { SQL_BACKENDS } from '../testing/backends.js';
import { adminOf } from '../testing/processes.js';
import { ApiError } from '../site/http.js';

/** Status of each of the calls: 2xx as 200, else the refusal's status. */
async function statuses(calls: Promise<unknown>[]): Promise<number[]> {
  return Promise.all(calls.map((p) => p.then(() => 200, (e: unknown) => (e instanceof ApiError ? e.status : -1))));
}

for (const backend of SQL_BACKENDS) {
  describe(`concurrent identical creations (${backend.name})`, async () => {
    const skip = await backend.skip();
    let c: RunningCoordinator;
    let dir: string;
    let cleanup: () => Promise<void>;
    before(async () => {
      if (skip) return;
      dir = mkdtempSync(join(tmpdir(), 'setu-races-'));
      const db = await backend.open();
      cleanup = db.cleanup;
      c = await startCoordinator({ dataDir: dir, db: db.url, port: 0, tickMs: 200, server: { authLimits: { perAddress: 1e9, perIdentity: 1e9 } } });
    });
    after(async () => {
      if (skip) return;
      await c.close();
      await cleanup();
      rmSync(dir, { recursive: true, force: true });
    });

    it('ten creations of one user: one 201, nine 409', { skip }, async () => {
      const admin = adminOf(c);
      const got = await statuses(Array.from({ length: 10 }, () => admin.json('POST', '/v1/users', { name: 'dr-rao', role: 'study_lead' })));
      assert.deepEqual(got.sort(), [200, 409, 409, 409, 409, 409, 409, 409, 409, 409], got.join(','));
      assert.equal((await c.store.listUsers()).filter((u) => u.name === 'dr-rao').length, 1);
    });

    it('ten registrations of one institution: one 201, nine 409', { skip }, async () => {
      const admin = adminOf(c);
      const body = { id: 'aiims', name: 'AIIMS Delhi', kind: 'hospital', jurisdiction: 'IN' };
      const got = await statuses(Array.from({ length: 10 }, () => admin.json('POST', '/v1/institutions', body)));
      assert.deepEqual(got.sort(), [200, 409, 409, 409, 409, 409, 409, 409, 409, 409], got.join(','));
      assert.deepEqual((await c.store.listEvents()).filter((e) => e.kind === 'institution.registered').length, 1, 'one registration recorded');
    });
  });
}
