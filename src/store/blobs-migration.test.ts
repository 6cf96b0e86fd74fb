/**
 * Migration 0009_blobs on a database made before it (SQLite and PostgreSQL): the bytes of existing model versions
 * and updates move into the blob store under their sha256, the rows keep digest and size, and the weights
 * columns are gone.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Migrator } from 'kysely';
import { SQL_BACKENDS } from '../testing/backends.js';
import { openRawDatabase } from './raw.js';
import { migrationProvider } from './migrations.js';
import { openStore } from './store.js';

const now = 1_700_000_000_000;
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

for (const b of SQL_BACKENDS) {
  describe(`0009_blobs on ${b.name}`, async () => {
    const skip = await b.skip();
    it('moves the bytes of existing rows into the blob store and drops the weights columns', { skip }, async () => {
      const { url, cleanup } = await b.open();
      try {
        const raw = await openRawDatabase(url);
        const all = await migrationProvider(b.name === 'postgres' ? 'postgres' : 'sqlite', () => { throw new Error('0009 must not run here'); }).getMigrations();
        const upTo8 = Object.fromEntries(Object.entries(all).filter(([k]) => k < '0009'));
        const r = await new Migrator({ db: raw, provider: { getMigrations: async () => upTo8 } }).migrateToLatest();
        assert.equal(r.error, undefined);
        const model = randomBytes(2_000), update = randomBytes(1_000);
        await raw.insertInto('studies').values({ id: 's1', name: 'n', spec: '{}', status: 'running', current_round: 1, participants: null, created_by: 'u', created_at: now, updated_at: now, claimed_by: null, claimed_until: null, error: null }).execute();
        for (const id of ['a', 'b']) {
          await raw.insertInto('sites').values({ id, name: id, institution: null, jurisdiction: null, credential_hash: `h-${id}`, public_key: null, status: 'active', created_at: now, last_seen_at: null }).execute();
        }
        await raw.insertInto('rounds').values({ study_id: 's1', round: 1, status: 'open', kind: 'fit', opened_at: now, deadline_at: now + 1, committed_at: null, model_version_id: null }).execute();
        for (const [id, site] of [['t1', 'a'], ['t2', 'b']]) {
          await raw.insertInto('tasks').values({ id, study_id: 's1', round: 1, site_id: site, kind: 'fit', model_version_id: 's1.v0', config: '{}', status: 'done', created_at: now, deadline_at: now + 1, delivered_at: null, done_at: now }).execute();
        }
        await raw.insertInto('model_versions').values({ id: 's1.v0', study_id: 's1', round: 0, weights: model, digest: 'old', created_at: now }).execute();
        await raw.insertInto('updates').values([
          { task_id: 't1', study_id: 's1', round: 1, site_id: 'a', weights: update, digest: sha(update), num_examples: 3, metrics: '{}', received_at: now },
          { task_id: 't2', study_id: 's1', round: 1, site_id: 'b', weights: null, digest: null, num_examples: 3, metrics: '{}', received_at: now },
        ]).execute();
        await raw.destroy();

        const store = await openStore(url);
        try {
          const mv = await store.getModelVersion('s1.v0');
          assert.deepEqual([mv?.digest, mv?.size], [sha(model), 2_000], 'the row names its bytes by their sha256');
          assert.ok(Buffer.from(await store.blobs.readAll(sha(model))).equals(model));
          const ups = await store.listUpdates('s1', 1);
          assert.deepEqual(ups.map((u) => [u.task_id, u.digest, u.size]), [['t1', sha(update), 1_000], ['t2', null, null]]);
          assert.ok(Buffer.from(await store.blobs.readAll(sha(update))).equals(update));
          const tables = await store.dumpTables();
          assert.ok(!('weights' in tables['model_versions']![0]!) && !('weights' in tables['updates']![0]!), 'the weights columns are gone');
        } finally {
          await store.close();
        }
      } finally {
        await cleanup();
      }
    });
  });
}
