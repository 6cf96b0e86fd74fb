/**
 * One behavioural suite, run against every SQL backend: SQLite (file in a temp dir) and PostgreSQL
 * (a throw-away database on the local server).
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Store, StoreConflict } from './store.js';
import { STORE_BACKENDS } from '../testing/backends.js';

const backends = STORE_BACKENDS;

const now = 1_700_000_000_000;

function site(id: string, name = id) {
  return { id, name, institution: 'Inst', jurisdiction: 'IN', credential_hash: `h-${id}`, public_key: null, status: 'active', created_at: now, last_seen_at: null };
}
function study(id: string) {
  return { id, name: 'heart', spec: '{}', status: 'running', current_round: 0, participants: null, created_by: 'admin', created_at: now, updated_at: now, claimed_by: null, claimed_until: null, error: null };
}
function task(id: string, siteId: string, round = 1) {
  return { id, study_id: 's1', round, site_id: siteId, kind: 'fit', model_version_id: 'm0', config: '{}', status: 'issued', created_at: now, deadline_at: now + 1000, delivered_at: null, done_at: null };
}
function round(r = 1) {
  return { study_id: 's1', round: r, status: 'open', kind: 'fit', opened_at: now, deadline_at: now + 1000, committed_at: null, model_version_id: null };
}
function update(taskId: string, siteId: string, r = 1) {
  return { task_id: taskId, study_id: 's1', round: r, site_id: siteId, weights: new Uint8Array([1, 2, 3]), digest: 'd', num_examples: 10, metrics: '{}', received_at: now };
}

for (const b of backends) {
  describe(`store on ${b.name}`, async () => {
    const skip = await b.skip();
    let store: Store;
    let url: string;
    let cleanup: () => Promise<void>;
    before(async () => {
      if (skip) return;
      ({ url, cleanup } = await b.open());
      store = await Store.open(url);
      await store.createSite(site('a'));
      await store.createSite(site('b'));
      await store.createStudy(study('s1'));
      await store.putModelVersion({ id: 'm0', study_id: 's1', round: 0, weights: new Uint8Array([9, 8, 7]), digest: 'x', created_at: now });
    });
    after(async () => {
      if (skip) return;
      await store.close();
      await cleanup();
    });

    it('keeps sites and reads blobs back as Uint8Array', { skip }, async () => {
      assert.deepEqual((await store.listSites()).map((s) => s.name), ['a', 'b']);
      assert.equal((await store.getSiteByCredential('h-b'))?.id, 'b');
      const mv = await store.getModelVersion('m0');
      assert.ok(mv?.weights instanceof Uint8Array);
      assert.deepEqual([...mv!.weights], [9, 8, 7]);
      assert.equal(typeof mv!.created_at, 'number');
    });

    it('consumes an invite exactly once and never after expiry', { skip }, async () => {
      await store.createInvite({ token_hash: 't1', site_name: 'c', institution: null, jurisdiction: null, created_by: 'admin', created_at: now, expires_at: now + 10, used_at: null, site_id: null });
      await store.createInvite({ token_hash: 't2', site_name: 'd', institution: null, jurisdiction: null, created_by: 'admin', created_at: now, expires_at: now + 10, used_at: null, site_id: null });
      assert.equal((await store.consumeInvite('t1', now + 1))?.site_name, 'c');
      assert.equal(await store.consumeInvite('t1', now + 2), undefined);
      assert.equal(await store.consumeInvite('t2', now + 11), undefined);
      assert.equal(await store.consumeInvite('nope', now), undefined);
    });

    it('opens a round with its tasks atomically and refuses to open it twice', { skip }, async () => {
      await store.openRound(round(1), [task('t-a', 'a'), task('t-b', 'b')]);
      assert.deepEqual((await store.pendingTasks('a')).map((t) => t.id), ['t-a']);
      const before = await store.snapshotCounts();
      await assert.rejects(store.openRound(round(1), [task('t-c', 'a')]), StoreConflict);
      assert.deepEqual(await store.snapshotCounts(), before);
    });

    it('accepts one update per task, only from the task owner', { skip }, async () => {
      await assert.rejects(store.acceptUpdate(update('t-a', 'b')), StoreConflict);
      await store.acceptUpdate(update('t-a', 'a'));
      await assert.rejects(store.acceptUpdate(update('t-a', 'a')), StoreConflict);
      assert.equal(await store.countUpdates('s1', 1), 1);
      const ups = await store.listUpdates('s1', 1);
      assert.deepEqual([...ups[0]!.weights!], [1, 2, 3]);
      assert.equal((await store.getTask('t-a'))?.status, 'done');
    });

    it('commits a round once, expiring open tasks, in one transaction', { skip }, async () => {
      await store.commitRound({
        studyId: 's1',
        round: 1,
        now: now + 5,
        model: { id: 'm1', study_id: 's1', round: 1, weights: new Uint8Array([4]), digest: 'y', created_at: now + 5 },
        metrics: [{ study_id: 's1', round: 1, site_id: null, phase: 'fit', name: 'loss', value: 0.5 }],
        strategyState: { study_id: 's1', round: 1, json: '{"k":1}', tensors: null },
        advanceTo: 1,
      });
      assert.equal((await store.getRound('s1', 1))?.status, 'committed');
      assert.equal((await store.getTask('t-b'))?.status, 'expired');
      assert.equal((await store.getStudy('s1'))?.current_round, 1);
      assert.equal((await store.latestModelVersion('s1'))?.id, 'm1');
      assert.equal((await store.latestStrategyState('s1'))?.json, '{"k":1}');
      assert.deepEqual((await store.listMetrics('s1')).map((m) => m.value), [0.5]);
      const before = await store.snapshotCounts();
      await assert.rejects(store.commitRound({ studyId: 's1', round: 1, now, metrics: [] }), StoreConflict);
      // An update for a committed round is refused too.
      await assert.rejects(store.acceptUpdate(update('t-b', 'b')), StoreConflict);
      assert.deepEqual(await store.snapshotCounts(), before);
    });

    it('rolls back a commit whose later step fails', { skip }, async () => {
      await store.openRound(round(2), [task('t2-a', 'a', 2)]);
      const before = await store.snapshotCounts();
      await assert.rejects(
        store.commitRound({
          studyId: 's1',
          round: 2,
          now,
          model: { id: 'm2', study_id: 's1', round: 2, weights: new Uint8Array([1]), digest: 'z', created_at: now },
          metrics: [],
          inTx: async () => {
            throw new Error('boom');
          },
        }),
        /boom/,
      );
      assert.deepEqual(await store.snapshotCounts(), before);
      assert.equal((await store.getRound('s1', 2))?.status, 'open');
    });

    it('lets exactly one coordinator instance hold a study lease', { skip }, async () => {
      assert.equal(await store.claimStudy('s1', 'i1', now, 1000), true);
      assert.equal(await store.claimStudy('s1', 'i2', now + 10, 1000), false);
      assert.equal(await store.claimStudy('s1', 'i1', now + 20, 1000), true);
      assert.equal(await store.claimStudy('s1', 'i2', now + 5000, 1000), true);
    });

    it('moves study status only from the expected state, and a stopped study issues nothing more', { skip }, async () => {
      await assert.rejects(store.transitionStudy('s1', ['created'], 'running', now), StoreConflict);
      assert.deepEqual((await store.pendingTasks('a')).map((t) => t.id), ['t2-a'], 'round 2 is still open for site a');
      await store.transitionStudy('s1', ['running'], 'stopped', now);
      assert.equal((await store.getStudy('s1'))?.status, 'stopped');
      assert.deepEqual(await store.pendingTasks('a'), [], 'stopping expired the open task');
    });

    it('survives reopening: migrations are idempotent and data persists', { skip }, async () => {
      const again = await Store.open(url);
      assert.equal((await again.listSites()).length, 2);
      await again.close();
    });

    it('records refusals with reasons', { skip }, async () => {
      await store.recordRefusal({ study_id: 's1', round: 2, site_id: 'a', task_id: 't2-a', reason: 'NaN in weight', at: now });
      assert.deepEqual((await store.listRefusals('s1')).map((r) => r.reason), ['NaN in weight']);
    });
  });
}
