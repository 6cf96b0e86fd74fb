/**
 * The ONE behavioural suite of the Store interface, run by store.test.ts against every backend (memory, SQLite,
 * PostgreSQL): what one implementation does, the others must do. Refusals are checked to change nothing by
 * comparing table contents (storeDigest), not row counts.
 */
import { createHash } from 'node:crypto';
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openStore, StoreConflict, type Store } from './store.js';
import { storeDigest } from './digest.js';
import type { StoreBackend } from '../testing/backends.js';
import type { PrivacySpend } from '../protocol/api.js';

const now = 1_700_000_000_000;

function site(id: string, name = id) {
  return { id, name, institution: 'Inst', jurisdiction: 'IN', credential_hash: `h-${id}`, public_key: null, status: 'active', created_at: now, last_seen_at: null };
}
function study(id: string, status = 'running') {
  return { id, name: 'heart', spec: '{}', status, current_round: 0, participants: null, created_by: 'admin', created_at: now, updated_at: now, claimed_by: null, claimed_until: null, error: null };
}
function task(id: string, siteId: string, round = 1) {
  return { id, study_id: 's1', round, site_id: siteId, kind: 'fit', model_version_id: 'm0', config: '{}', status: 'issued', created_at: now, deadline_at: now + 1000, delivered_at: null, done_at: null };
}
function round(r = 1) {
  return { study_id: 's1', round: r, status: 'open', kind: 'fit', opened_at: now, deadline_at: now + 1000, committed_at: null, model_version_id: null };
}
function update(taskId: string, siteId: string, r = 1) {
  return { task_id: taskId, study_id: 's1', round: r, site_id: siteId, digest: 'd', size: 3, num_examples: 10, metrics: '{}', received_at: now };
}
function user(id: string, name = id) {
  return { id, name, role: 'study_lead', institution: null, public_key: null, status: 'invited', created_by: 'admin', created_at: now };
}
const spend = (epsilon: number): PrivacySpend => ({ mechanism: 'dp-sgd', sampleRate: 0.0201005, noiseMultiplier: 2.403717, steps: 100, epsilon, delta: 1e-3, budgetEpsilon: 1, budgetDelta: 1e-3 });
const auditRow = (seq: number, prev: string) => ({ seq, ts: now + seq, actor: 'a', kind: 'k', subject: 's', data: '{}', prev_hash: prev, hash: `h${seq}`.padEnd(64, '0'), sig: 'sig' });

/** Settles every promise; how many fulfilled, and the rejections. */
async function settle<T>(ps: Promise<T>[]): Promise<{ ok: T[]; errors: unknown[] }> {
  const rs = await Promise.allSettled(ps);
  return {
    ok: rs.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : [])),
    errors: rs.flatMap((r) => (r.status === 'rejected' ? [r.reason] : [])),
  };
}

export function storeSuite(b: StoreBackend): void {
  describe(`store on ${b.name}`, async () => {
    const skip = await b.skip();
    let store: Store;
    /** A second coordinator's handle on the same data: its own connections on PostgreSQL, the same store elsewhere. */
    let other: Store;
    let url: string;
    let cleanup: () => Promise<void>;
    before(async () => {
      if (skip) return;
      ({ url, cleanup } = await b.open());
      store = await openStore(url);
      other = b.name === 'postgres' ? await openStore(url) : store;
      await store.createSite(site('a'));
      await store.createSite(site('b'));
      await store.createStudy(study('s1'));
      const m0 = await store.blobs.put(new Uint8Array([9, 8, 7]));
      await store.putModelVersion({ id: 'm0', study_id: 's1', round: 0, digest: m0.digest, size: m0.size, created_at: now });
    });
    after(async () => {
      if (skip) return;
      if (other !== store) await other.close();
      await store.close();
      await cleanup();
    });

    describe('core', () => {
      it('keeps sites, and a model version as a row naming its blob in store.blobs', { skip }, async () => {
        assert.deepEqual((await store.listSites()).map((s) => s.name), ['a', 'b']);
        assert.equal((await store.getSiteByName('b'))?.id, 'b');
        const mv = await store.getModelVersion('m0');
        assert.deepEqual([mv?.size, typeof mv?.created_at, Object.keys(mv!).sort()], [3, 'number', ['created_at', 'digest', 'id', 'round', 'size', 'study_id']]);
        const bytes = await store.blobs.readAll(mv!.digest);
        assert.ok(bytes instanceof Uint8Array);
        assert.deepEqual([...bytes], [9, 8, 7]);
        assert.deepEqual(await store.listModelVersions('s1'), [mv]);
        // A transaction's tx has the store's blobs (on SQLite the same data on the transaction's handle: tiered-blobs.ts).
        await store.transaction(async (tx) => assert.deepEqual([...await tx.blobs.readAll(mv!.digest)], [9, 8, 7], "a transaction's tx reads the store's blobs"));
        assert.deepEqual([...await other.blobs.readAll(mv!.digest)], [9, 8, 7], 'a second coordinator on the same data reads the same blobs');
      });

      it('refuses a taken name or id with StoreConflict, changing nothing', { skip }, async () => {
        const before = await storeDigest(store);
        await assert.rejects(store.createSite(site('a2', 'a')), StoreConflict);
        await assert.rejects(store.createSite(site('a', 'other')), StoreConflict);
        await assert.rejects(store.createStudy(study('s1')), StoreConflict);
        assert.deepEqual(await storeDigest(store), before);
      });

      it('consumes an invite exactly once and never after expiry', { skip }, async () => {
        await store.createInvite({ token_hash: 't1', site_name: 'c', institution: null, jurisdiction: null, created_by: 'admin', created_at: now, expires_at: now + 10, used_at: null, site_id: null });
        await store.createInvite({ token_hash: 't2', site_name: 'd', institution: null, jurisdiction: null, created_by: 'admin', created_at: now, expires_at: now + 10, used_at: null, site_id: null });
        const both = await settle(Array.from({ length: 6 }, (_, i) => (i % 2 ? store : other).consumeInvite('t1', now + 1)));
        assert.equal(both.ok.filter(Boolean).length, 1, 'of concurrent enrolments with one token exactly one wins');
        assert.equal(await store.consumeInvite('t1', now + 2), undefined);
        assert.equal(await store.consumeInvite('t2', now + 11), undefined);
        assert.equal(await store.consumeInvite('nope', now), undefined);
        await store.attachInviteToSite('t1', 'a');
      });

      it('opens a round with its tasks atomically and refuses to open it twice', { skip }, async () => {
        await store.openRound(round(1), [task('t-a', 'a'), task('t-b', 'b')]);
        assert.deepEqual((await store.pendingTasks('a')).map((t) => t.id), ['t-a']);
        assert.deepEqual((await store.issuedTasksSince(now)).map((t) => [t.id, t.site_id, t.created_at]).sort(), [['t-a', 'a', now], ['t-b', 'b', now]]);
        assert.deepEqual(await store.issuedTasksSince(now + 1), [], 'none issued later');
        const before = await storeDigest(store);
        await assert.rejects(store.openRound(round(1), [task('t-c', 'a')]), StoreConflict);
        assert.deepEqual(await storeDigest(store), before);
        assert.equal((await store.openRoundOf('s1'))?.round, 1);
        assert.equal(await store.siteMayReadModel('a', 'm0'), true);
        assert.equal(await store.siteMayReadModel('a', 'm9'), false);
        assert.equal(await store.markDelivered('t-a', now + 1), true, 'an issued task is delivered');
        assert.equal((await store.getTask('t-a'))?.status, 'delivered');
        assert.equal(await store.markDelivered('t-a', now + 2), false, 'a compare-and-set: not twice');
        assert.equal((await store.getTask('t-a'))?.delivered_at, now + 1);
        assert.deepEqual((await store.issuedTasksSince(now)).map((t) => t.id), ['t-b'], 'a delivered task is no longer issued');
      });

      it('accepts one update per task, only from the task owner', { skip }, async () => {
        await assert.rejects(store.acceptUpdate(update('t-a', 'b')), StoreConflict);
        const results = await settle(Array.from({ length: 4 }, (_, i) => (i % 2 ? store : other).acceptUpdate(update('t-a', 'a'))));
        assert.equal(results.ok.length, 1, 'of concurrent results for one task exactly one is kept');
        assert.ok(results.errors.every((e) => e instanceof StoreConflict), String(results.errors));
        assert.equal(await store.countUpdates('s1', 1), 1);
        assert.deepEqual(await store.roundProgress('s1', 1), { tasks: 2, updates: 1, closedWithoutResult: 0 });
        assert.deepEqual(await store.roundProgress('s1', 9), { tasks: 0, updates: 0, closedWithoutResult: 0 });
        const ups = await store.listUpdates('s1', 1);
        assert.deepEqual([ups[0]!.digest, ups[0]!.size], ['d', 3]);
        assert.equal((await store.getTask('t-a'))?.status, 'done');
      });

      it('commits a round once, expiring open tasks, in one transaction', { skip }, async () => {
        await store.commitRound({
          studyId: 's1', round: 1, now: now + 5,
          model: { id: 'm1', study_id: 's1', round: 1, digest: 'y', size: 1, created_at: now + 5 },
          metrics: [{ study_id: 's1', round: 1, site_id: null, phase: 'fit', name: 'loss', value: 0.5 }, { study_id: 's1', round: 1, site_id: 'a', phase: 'fit', name: 'loss', value: 0.25 }],
          strategyState: { study_id: 's1', round: 1, json: '{"k":1}', tensors: new Uint8Array([5]) },
          advanceTo: 1,
        });
        assert.equal((await store.getRound('s1', 1))?.status, 'committed');
        assert.equal((await store.getTask('t-b'))?.status, 'expired');
        assert.equal((await store.getStudy('s1'))?.current_round, 1);
        assert.equal((await store.latestModelVersion('s1'))?.id, 'm1');
        assert.deepEqual((await store.listModelVersions('s1')).map((v) => v.round), [0, 1]);
        const st = await store.latestStrategyState('s1');
        assert.equal(st?.json, '{"k":1}');
        assert.deepEqual([...st!.tensors!], [5]);
        assert.deepEqual((await store.listMetrics('s1')).map((m) => m.value), [0.5, 0.25]);
        const before = await storeDigest(store);
        await assert.rejects(store.commitRound({ studyId: 's1', round: 1, now, metrics: [] }), StoreConflict);
        await assert.rejects(store.acceptUpdate(update('t-b', 'b')), StoreConflict, 'an update for a committed round is refused');
        assert.deepEqual(await storeDigest(store), before);
      });

      it('rolls back a commit whose later step fails', { skip }, async () => {
        await store.openRound(round(2), [task('t2-a', 'a', 2), task('t2-b', 'b', 2)]);
        const before = await storeDigest(store);
        await assert.rejects(
          store.commitRound({
            studyId: 's1', round: 2, now,
            model: { id: 'm2', study_id: 's1', round: 2, digest: 'z', size: 1, created_at: now },
            metrics: [],
            inTx: async (tx) => {
              await tx.setKv('half-done', 'yes');
              throw new Error('boom');
            },
          }),
          /boom/,
        );
        assert.deepEqual(await storeDigest(store), before);
        assert.equal((await store.getRound('s1', 2))?.status, 'open');
        assert.equal(await store.getKv('half-done'), undefined);
      });

      it('keeps chunked uploads: one per task and digest, found again, stale once their task is closed', { skip }, async () => {
        const up = { id: 'u1', task_id: 't2-a', site_id: 'a', digest: 'd'.repeat(64), size: 10, created_at: now };
        await store.createUpload(up);
        await assert.rejects(store.createUpload({ ...up, id: 'u2' }), StoreConflict, 'the same task and digest: one upload');
        await assert.rejects(store.createUpload({ ...up, digest: 'e'.repeat(64) }), StoreConflict, 'the id is taken');
        assert.deepEqual([await store.getUpload('u1'), await store.findUpload('t2-a', up.digest), await store.findUpload('t2-a', 'e'.repeat(64))], [up, up, undefined]);
        await store.createUpload({ ...up, id: 'u3', task_id: 't-a' }); // t-a is done: nothing will complete u3
        assert.deepEqual((await store.staleUploads()).map((u) => u.id), ['u3']);
        await store.deleteUpload('u3');
        await store.deleteUpload('u1');
        assert.deepEqual([await store.getUpload('u1'), await store.staleUploads()], [undefined, []]);
      });

      it('refuses an open task once; a restarted round issues its live tasks again and keeps the refused one closed', { skip }, async () => {
        assert.equal(await store.refuseTask('t2-b', now), true);
        assert.equal(await store.refuseTask('t2-b', now), false);
        await store.acceptUpdate(update('t2-a', 'a', 2));
        assert.deepEqual(await store.roundProgress('s1', 2), { tasks: 2, updates: 1, closedWithoutResult: 1 });
        await store.resetRound('s1', 2);
        assert.deepEqual(await store.roundProgress('s1', 2), { tasks: 2, updates: 0, closedWithoutResult: 1 });
        assert.equal(await store.countUpdates('s1', 2), 0);
        assert.deepEqual((await store.listTasks('s1', 2)).map((t) => [t.id, t.status, t.done_at]), [['t2-a', 'issued', null], ['t2-b', 'refused', now]]);
      });

      it('fails an open task once with its error, and never a closed one', { skip }, async () => {
        await store.openRound(round(3), [task('t3-a', 'a', 3), task('t3-b', 'b', 3)]);
        const err = { task_id: 't3-a', study_id: 's1', round: 3, site_id: 'a', code: 'data_unreadable', message: 'heart.csv: no such file', at: now };
        const r = await Promise.all(Array.from({ length: 4 }, (_, i) => (i % 2 ? store : other).failTask(err)));
        assert.deepEqual(r.filter(Boolean).length, 1, 'of concurrent errors for one task one is kept');
        assert.equal((await store.getTask('t3-a'))?.status, 'failed');
        await store.acceptUpdate(update('t3-b', 'b', 3));
        assert.equal(await store.failTask({ ...err, task_id: 't3-b', site_id: 'b' }), false, 'a task with a result takes no error');
        assert.deepEqual(await store.roundProgress('s1', 3), { tasks: 2, updates: 1, closedWithoutResult: 1 }, 'a failed task counts as answered without a result');
        assert.deepEqual((await store.listTaskErrors('s1', 3)).map((e) => [e.task_id, e.code, e.at]), [['t3-a', 'data_unreadable', now]]);
        assert.equal((await store.listTaskErrors('s1')).length, 1);
        assert.deepEqual(await store.listTaskErrors('s1', 2), []);
      });

      it('moves an open round\'s deadline and its open tasks\' later, and leaves a committed round alone', { skip }, async () => {
        await store.extendOpenRound('s1', 2, 500.4);
        assert.equal((await store.getRound('s1', 2))?.deadline_at, now + 1000 + 500);
        assert.deepEqual((await store.listTasks('s1', 2)).map((t) => t.deadline_at), [now + 1000 + 500, now + 1000], 'the refused task keeps its deadline');
        const before = await storeDigest(store);
        await store.extendOpenRound('s1', 1, 500);
        assert.deepEqual(await storeDigest(store), before);
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
        await store.transitionStudy('s1', ['running'], 'stopped', now, { error: null });
        assert.equal((await store.getStudy('s1'))?.status, 'stopped');
        assert.deepEqual(await store.pendingTasks('a'), [], 'stopping expired the open task');
        assert.deepEqual((await store.listStudiesByStatus('stopped')).map((s) => s.id), ['s1']);
      });

      it('starts a study with its participants and initial model, all or nothing', { skip }, async () => {
        await store.createStudy(study('s2', 'created'));
        const initial = { id: 's2.v0', study_id: 's2', round: 0, digest: 'i', size: 1, created_at: now };
        await store.startStudy('s2', ['a', 'b'], initial, now);
        const s2 = await store.getStudy('s2');
        assert.deepEqual([s2?.status, JSON.parse(s2!.participants!)], ['running', ['a', 'b']]);
        const before = await storeDigest(store);
        await assert.rejects(store.startStudy('s2', ['a'], { ...initial, id: 's2.v0b' }, now), StoreConflict);
        assert.deepEqual(await storeDigest(store), before);
        assert.deepEqual((await store.listStudies()).map((s) => s.id), ['s1', 's2']);
      });

      it('counts refusals of a task per code in one row, exactly under concurrency', { skip }, async () => {
        const r = { study_id: 's1', round: 2, site_id: 'a', task_id: 't2-a', code: 'non_finite', reason: 'NaN in weight', at: now };
        assert.equal(await store.countRefusal(r), 1);
        const counts = await Promise.all(Array.from({ length: 6 }, (_, i) => (i % 2 ? store : other).countRefusal({ ...r, reason: 'later', at: now + 1 })));
        assert.deepEqual(counts.sort((x, y) => x - y), [2, 3, 4, 5, 6, 7]);
        assert.equal(await store.countRefusal({ ...r, code: 'no_cohort', reason: 'no cohort' }), 1);
        assert.deepEqual((await store.listRefusals('s1')).map((x) => [x.code, x.count, x.reason, x.last_at]), [['non_finite', 7, 'NaN in weight', now + 1], ['no_cohort', 1, 'no cohort', now]],
          'the first reason stays');
        assert.equal((await store.listRefusals()).length, 2);
        assert.deepEqual(await store.listRefusals('other'), []);
      });

      it('freezes the cohorts declared at a study\'s start', { skip }, async () => {
        await store.declareCohorts('a', { heart: 100 }, now);
        await store.snapshotStudyCohorts('s1', 'heart', ['a', 'b'], now);
        await store.declareCohorts('a', { heart: 1_000_000_000 }, now + 1);
        await store.snapshotStudyCohorts('s1', 'heart', ['a'], now + 1);
        assert.equal(await store.studyCohortSize('s1', 'a'), 100, 'a later declaration does not move the frozen size');
        assert.equal(await store.studyCohortSize('s1', 'b'), undefined, 'b declared nothing then');
      });

      it('keeps key/value pairs, replaced on write', { skip }, async () => {
        await store.setKv('k', 'v1');
        await store.setKv('k', 'v2');
        assert.equal(await store.getKv('k'), 'v2');
        assert.equal(await store.getKv('none'), undefined);
      });

      it('survives reopening: migrations are idempotent and data persists', { skip: skip || (b.name === 'memory' && 'the memory store keeps nothing') }, async () => {
        const again = await openStore(url);
        assert.equal((await again.listSites()).length, 2);
        await again.close();
      });

      it('commits the metric rows of 2,000 sites in one round (past the drivers\' bind-parameter limit for one INSERT)', { skip }, async () => {
        await store.createStudy(study('s-wide'));
        await store.openRound({ ...round(1), study_id: 's-wide' }, []);
        const metrics = Array.from({ length: 2000 }, (_, i) => ['loss', 'accuracy', 'eval.loss', 'eval.auc'].map((name) => ({ study_id: 's-wide', round: 1, site_id: `site-${i}`, phase: 'fit', name, value: i }))).flat();
        await store.commitRound({ studyId: 's-wide', round: 1, now, metrics, advanceTo: 1 });
        const kept = await store.listMetrics('s-wide');
        assert.equal(kept.length, 8000);
        assert.equal(kept.filter((m) => m.site_id === 'site-1999').length, 4);
      });
    });

    describe('transactions', () => {
      it('accepts many concurrent results as each alone: a refused one (its own conflict, its inTx throwing) changes nothing, the others commit with their inTx', { skip }, async () => {
        const G = 'sg';
        await store.createStudy(study(G));
        const ids = Array.from({ length: 70 }, (_, i) => `g-${String(i).padStart(2, '0')}`);
        await store.openRound({ ...round(1), study_id: G }, ids.map((id, i) => ({ ...task(id, i % 2 ? 'a' : 'b'), study_id: G })));
        const before = await storeDigest(store);
        const calls = [
          ...ids.map((id, i) => ({ id, site: i % 2 ? 'a' : 'b' })),
          { id: ids[3]!, site: 'a' }, // a second result for a task: one of the two is kept
          { id: ids[4]!, site: 'a' }, // not its owner's
        ];
        const res = await settle(calls.map((c, i) => (i % 3 ? store : other).acceptUpdate({ ...update(c.id, c.site), study_id: G }, async (tx) => {
          if (c.id === ids[10]) throw new Error('refused by its own check');
          await tx.setKv(`accepted ${c.id} ${i}`, c.site);
        })));
        assert.equal(res.ok.length, 69, `all but the failing inTx, the twin and the wrong owner: ${res.errors.map(String).join('; ')}`);
        assert.equal(res.errors.filter((e) => e instanceof StoreConflict).length, 2);
        assert.equal(res.errors.filter((e) => !(e instanceof StoreConflict) && String(e).includes('refused by its own check')).length, 1);
        const ups = await store.listUpdates(G, 1);
        assert.deepEqual(ups.map((u) => u.task_id).sort(), ids.filter((id) => id !== ids[10]));
        const kv = ((await store.dumpTables()).kv ?? []).map((r) => String(r.key)).filter((k) => k.startsWith('accepted '));
        assert.equal(kv.length, 69, 'each committed result with its inTx, no refused one');
        assert.ok(!kv.some((k) => k.startsWith(`accepted ${ids[10]} `) || k === `accepted ${ids[4]} ${calls.length - 1}`));
        assert.equal((await store.getTask(ids[10]!))?.status, 'issued', 'the refused one is still open');
        assert.notDeepEqual(await storeDigest(store), before);
      });

      it('accepts a batch of results each with an audit entry: every one committed with its entry, the chain unbroken', { skip }, async () => {
        const G = 'sa';
        await store.createStudy(study(G));
        const ids = Array.from({ length: 40 }, (_, i) => `sa-${String(i).padStart(2, '0')}`);
        await store.openRound({ ...round(1), study_id: G }, ids.map((id, i) => ({ ...task(id, i % 2 ? 'a' : 'b'), study_id: G })));
        const start = await store.auditHead();
        // As governance/audit-store.ts appendAudit does: queued where the store batches, appended at once elsewhere.
        const entry = (subject: string) => (h: { seq: number; hash: string }) => ({ ...auditRow(h.seq + 1, h.hash), subject, hash: createHash('sha256').update(`${h.hash}/${subject}`).digest('hex') });
        await Promise.all(ids.map((id, i) => (i % 3 ? store : other).acceptUpdate({ ...update(id, i % 2 ? 'a' : 'b'), study_id: G }, async (tx) => {
          const build = entry(id);
          if (!tx.queueAuditRow(build)) await tx.appendAuditRow(build);
          await tx.setKv(`audited ${id}`, 'yes');
        })));
        assert.deepEqual((await store.listUpdates(G, 1)).map((u) => u.task_id).sort(), ids);
        const rows = await store.listAuditRows({ after: start.seq });
        assert.deepEqual(rows.map((r) => r.subject).sort(), ids, 'one entry per accepted result');
        let prev = start.hash;
        for (const [k, r] of rows.entries()) {
          assert.equal(r.seq, start.seq + k + 1);
          assert.equal(r.prev_hash, prev, `entry ${r.seq} links to the one before`);
          prev = r.hash;
        }
        assert.deepEqual(await store.auditHead(), { seq: start.seq + ids.length, hash: prev });
        assert.equal(((await store.dumpTables()).kv ?? []).filter((r) => String(r.key).startsWith('audited sa-')).length, ids.length);
        assert.equal(store.queueAuditRow(entry('outside')), false, 'outside a batch nothing is queued');
      });

      it('runs a transaction on a Store-shaped handle and rolls everything back on a throw', { skip }, async () => {
        const before = await storeDigest(store);
        await assert.rejects(store.transaction(async (tx) => {
          await tx.createSite(site('tx-1'));
          await tx.setKv('tx', '1');
          await tx.transaction(async (inner) => inner.createUser(user('tx-user'))); // a nested call joins the transaction
          assert.equal((await tx.getSite('tx-1'))?.name, 'tx-1', 'the transaction sees its own writes');
          throw new Error('undo');
        }), /undo/);
        assert.deepEqual(await storeDigest(store), before);
        assert.equal(await store.transaction(async (tx) => (await tx.getSite('a'))?.name), 'a', 'returns its result');
      });

      it('refuses a call on the store itself from inside its own transaction (it would wait for itself)', { skip }, async () => {
        await assert.rejects(store.transaction(async () => store.getKv('k')), /through the transaction handle \(tx\)/);
        await assert.rejects(store.transaction(async () => store.transaction(async (tx) => tx.getKv('k'))), /through the transaction handle/);
        assert.equal(await store.transaction(async (tx) => tx.getKv('k')), 'v2', 'the handle works');
        // Still refused past a macrotask inside the callback, and in a transaction that starts after others ended
        // (the storage is disabled while no callback runs, store.ts callbacksRunning).
        await assert.rejects(store.transaction(async (tx) => { await new Promise((r) => setImmediate(r)); await tx.getKv('k'); return store.getKv('k'); }), /through the transaction handle/);
        await store.transaction(async (tx) => tx.setKv('while', 'inside'));
        assert.equal(await store.getKv('while'), 'inside', 'after it, the store is itself again');
      });

      it('does not let one transaction see or lose another\'s writes', { skip }, async () => {
        await store.setKv('counter', '0');
        // Read-modify-write of one value, 10 at a time: serialised transactions lose none (PostgreSQL: the row lock of the
        // upsert does not protect the read, so each takes a lock on the audit head first, as decisions lock their row).
        await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? store : other).transaction(async (tx) => {
          await tx.appendAuditRow((h) => auditRow(h.seq + 1, h.hash)); // takes the chain's lock
          const n = Number(await tx.getKv('counter'));
          await tx.setKv('counter', String(n + 1));
        })));
        assert.equal(await store.getKv('counter'), '10');
      });
    });

    describe('trust layer', () => {
      it('creates a user once: of 10 concurrent identical creations one succeeds, the rest are StoreConflict', { skip }, async () => {
        const r = await settle(Array.from({ length: 10 }, (_, i) => (i % 2 ? store : other).createUser(user(`u-${i}`, 'same-name'))));
        assert.equal(r.ok.length, 1);
        assert.equal(r.errors.length, 9);
        for (const e of r.errors) assert.ok(e instanceof StoreConflict, `expected StoreConflict, got ${String(e)}`);
      });

      it('enrols a user once with its key, rotates it while active, and revokes', { skip }, async () => {
        await store.createUser(user('u-x'));
        await store.createUserInvite({ token_hash: 'ut', user_id: 'u-x', created_at: now, expires_at: now + 10 });
        assert.equal(await store.consumeUserInvite('ut', now + 1), 'u-x');
        assert.equal(await store.consumeUserInvite('ut', now + 1), undefined);
        assert.equal(await store.setUserPublicKey('u-x', 'k0'), false, 'an invited user has no key to replace');
        assert.equal(await store.activateUser('u-x', 'k1'), true);
        assert.equal(await store.activateUser('u-x', 'k2'), false);
        assert.equal(await store.setUserPublicKey('u-x', 'k3'), true);
        assert.equal((await store.getUserByName('u-x'))?.public_key, 'k3');
        assert.equal(await store.revokeUser('u-x'), true);
        assert.equal(await store.revokeUser('u-x'), false);
        assert.equal((await store.getUser('u-x'))?.status, 'revoked');
        assert.ok((await store.listUsers()).some((u) => u.id === 'u-x'));
        assert.equal(await store.revokeSite('b'), true);
        assert.equal(await store.revokeSite('b'), false);
        await store.setSitePublicKey('a', 'site-key');
        assert.equal((await store.getSite('a'))?.public_key, 'site-key');
      });

      it('records a nonce once: of 20 concurrent inserts exactly one wins', { skip }, async () => {
        const rs = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? store : other).rememberNonce('site-x', 'nonce-aaaaaaaaaaaaaaaa', 1000)));
        assert.equal(rs.filter(Boolean).length, 1);
        assert.equal(await store.rememberNonce('site-y', 'nonce-aaaaaaaaaaaaaaaa', 1000), true, 'nonces are per key');
      });

      it('records a nonce for a remembered key only while that key is active and current, once', { skip }, async () => {
        await store.createSite({ ...site('site-n', 'n'), public_key: 'kn' });
        await store.createUser({ ...user('user-n'), public_key: 'ku', status: 'active' });
        const rs = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? store : other).rememberNonceIfActive('site-n', 'nonce-cccccccccccccccc', now, 'kn')));
        assert.equal(rs.filter(Boolean).length, 1, 'of 10 concurrent inserts exactly one wins');
        assert.equal(await store.rememberNonce('site-n', 'nonce-cccccccccccccccc', now), false, 'the same nonce table as rememberNonce');
        assert.equal(await store.rememberNonceIfActive('site-n', 'nonce-dddddddddddddddd', now, 'other-key'), false, 'not under a key the site no longer has');
        assert.equal(await store.rememberNonceIfActive('user-n', 'nonce-dddddddddddddddd', now, 'ku'), true, 'a user id is looked up among the users');
        await store.setSitePublicKey('site-n', 'kn2');
        assert.equal(await store.rememberNonceIfActive('site-n', 'nonce-eeeeeeeeeeeeeeee', now, 'kn'), false, 'a rotated key is refused at once');
        assert.equal(await store.rememberNonceIfActive('site-n', 'nonce-eeeeeeeeeeeeeeee', now, 'kn2'), true);
        assert.equal(await other.revokeSite('site-n'), true);
        assert.equal(await store.rememberNonceIfActive('site-n', 'nonce-ffffffffffffffff', now, 'kn2'), false, 'revoked (through another handle) is refused at once');
        assert.equal(await store.rememberNonceIfActive('site-zz', 'nonce-ffffffffffffffff', now, 'kn2'), false, 'no such site');
        assert.equal(await store.rememberNonce('site-n', 'nonce-ffffffffffffffff', now), true, 'a refused one was not recorded');
      });

      it('records the nonces of many concurrent requests (sites and users, more than one statement holds) as each alone would be', { skip }, async () => {
        await store.createSite({ ...site('site-m', 'm'), public_key: 'km' });
        await store.createUser({ ...user('user-m'), public_key: 'kum', status: 'active' });
        const n = (i: number) => `nonce-many-${String(i).padStart(8, '0')}`;
        // 450 distinct nonces of a site and 50 of a user at once, each sent twice, a wrong key and an unknown site among them.
        const calls = [
          ...Array.from({ length: 450 }, (_, i) => ['site-m', n(i), 'km'] as const),
          ...Array.from({ length: 50 }, (_, i) => ['user-m', n(i), 'kum'] as const),
          ...Array.from({ length: 450 }, (_, i) => ['site-m', n(i), 'km'] as const),
          ['site-m', n(9999), 'not-km'] as const,
          ['site-unknown', n(9999), 'km'] as const,
        ];
        const rs = await Promise.all(calls.map(([k, nonce, pk], i) => (i % 3 ? store : other).rememberNonceIfActive(k, nonce, now, pk)));
        const won = new Map<string, number>();
        calls.forEach(([k, nonce], i) => rs[i] && won.set(`${k} ${nonce}`, (won.get(`${k} ${nonce}`) ?? 0) + 1));
        assert.equal(won.size, 500, 'every distinct (key, nonce) of an active key with its key recorded');
        assert.ok([...won.values()].every((c) => c === 1), 'and each exactly once: its twin is a replay');
        assert.equal(rs[calls.length - 2], false, 'not under another key');
        assert.equal(rs[calls.length - 1], false, 'not for an unknown site');
        assert.equal(await store.rememberNonce('site-m', n(9999), now), true, 'the refused ones were not recorded');
        assert.equal(await store.rememberNonce('site-m', n(7), now), false, 'the recorded ones are in the one nonce table');
      });

      it('prunes nonces older than the cutoff only', { skip }, async () => {
        await store.rememberNonce('site-x', 'nonce-old-000000000000', 10);
        await store.rememberNonce('site-x', 'nonce-new-000000000000', 5000);
        assert.equal(await store.pruneNonces(2000), 3); // the two at ts 1000 and the one at 10
        assert.equal(await store.rememberNonce('site-x', 'nonce-new-000000000000', 5000), false);
        assert.equal(await store.rememberNonce('site-x', 'nonce-old-000000000000', 10), true);
      });

      it('keeps one declared cohort size per site and dataset, replaced on redeclaration', { skip }, async () => {
        await store.createSite({ ...site('site-c', 'c'), credential_hash: 'none:site-c' });
        await store.declareCohorts('site-c', { heart: 100, other: 5 }, 1);
        await store.declareCohorts('site-c', { heart: 120 }, 2);
        assert.equal(await store.cohortSize('site-c', 'heart'), 120);
        assert.equal(await store.cohortSize('site-c', 'other'), 5);
        assert.equal(await store.cohortSize('site-c', 'none'), undefined);
        assert.deepEqual(await store.listCohorts('site-c'), { heart: 120, other: 5 });
      });
    });

    describe('governance and compute', () => {
      it('registers an institution once (10 concurrent: one success, the rest StoreConflict) and links a site', { skip }, async () => {
        const inst = { id: 'aiims', name: 'AIIMS', kind: 'hospital' as const, jurisdiction: 'IN', createdAt: now };
        const r = await settle(Array.from({ length: 10 }, (_, i) => (i % 2 ? store : other).createInstitution(inst)));
        assert.equal(r.ok.length, 1);
        for (const e of r.errors) assert.ok(e instanceof StoreConflict, `expected StoreConflict, got ${String(e)}`);
        assert.deepEqual(await store.getInstitution('aiims'), inst);
        await store.linkSite('a', inst);
        const m = (await store.listMemberships()).find((x) => x.id === 'a');
        assert.deepEqual(m, { id: 'a', name: 'a', status: 'active', institutionId: 'aiims', institution: 'AIIMS', jurisdiction: 'IN' });
        assert.deepEqual((await store.listInstitutions()).map((i) => i.id), ['aiims']);
      });

      it('writes a lifecycle once and then only over the version it read', { skip }, async () => {
        assert.equal(await store.putLifecycle('s1', 'proposed', { v: 1 }, now), true);
        await assert.rejects(store.putLifecycle('s1', 'proposed', { v: 'again' }, now), StoreConflict);
        const row = (await store.getLifecycleRow('s1'))!;
        assert.equal(row.version, 1);
        assert.equal(await store.putLifecycle('s1', 'proposed', { v: 2 }, now, row.version), true);
        assert.equal(await store.putLifecycle('s1', 'proposed', { v: 'lost' }, now, row.version), false, 'a write over a stale version is refused');
        assert.deepEqual(JSON.parse((await store.getLifecycleRow('s1'))!.lifecycle), { v: 2 });
        assert.equal((await store.getLifecycleRow('s1'))!.version, 2);
      });

      it('serialises read-modify-write of one lifecycle under forUpdate: 20 concurrent increments, none lost', { skip }, async () => {
        await store.putLifecycle('s2', 'proposed', { n: 0 }, now);
        const bump = (s: Store) => s.transaction(async (tx) => {
          const row = (await tx.getLifecycleRow('s2', { forUpdate: true }))!;
          const n = (JSON.parse(row.lifecycle) as { n: number }).n;
          if (!(await tx.putLifecycle('s2', 'proposed', { n: n + 1 }, now, row.version))) throw new Error('lost the compare-and-set');
        });
        await Promise.all(Array.from({ length: 20 }, (_, i) => bump(i % 2 ? store : other)));
        assert.deepEqual(JSON.parse((await store.getLifecycleRow('s2'))!.lifecycle), { n: 20 });
      });

      it('keeps governance events, site profiles, resources, placements, usage and model cards', { skip }, async () => {
        await store.addEvent({ studyId: 's1', kind: 'study.proposed', actor: 'lead', data: { x: 1 }, at: now });
        await store.addEvent({ studyId: null, kind: 'institution.registered', actor: 'admin', data: null, at: now + 1 });
        assert.deepEqual((await store.listEvents('s1')).map((e) => [e.kind, e.data]), [['study.proposed', { x: 1 }]]);
        assert.equal((await store.listEvents()).length, 2);
        await store.putSiteProfile('a', { compute: { mode: 'placed', cpus: 2 }, datasets: { heart: { trainExamples: 10 } }, updatedAt: now });
        await store.putSiteProfile('a', { compute: { mode: 'own' }, datasets: {}, updatedAt: now + 1 });
        assert.deepEqual(await store.getSiteProfile('a'), { compute: { mode: 'own' }, datasets: {}, updatedAt: now + 1 });
        const res = { id: 'hpc', name: 'HPC', institution: 'aiims', jurisdiction: 'IN', scheduler: 'slurm' };
        assert.equal(await store.putResource(res, { cpus: 8 }, now), 'created');
        assert.equal(await store.putResource(res, { cpus: 16 }, now + 1), 'updated');
        assert.deepEqual((await store.listResources()).map((r) => [r.id, r.spec, r.createdAt, r.updatedAt]), [['hpc', { cpus: 16 }, now, now + 1]]);
        const pl = { taskId: 't-a', studyId: 's1', siteId: 'a', resourceId: 'hpc', reason: 'fits', placedAt: now, jobId: null, state: 'placed' };
        await store.putPlacement(pl);
        await assert.rejects(store.putPlacement(pl), StoreConflict);
        await store.updatePlacement('t-a', { jobId: 'j1', state: 'running' });
        assert.deepEqual(await store.getPlacement('t-a'), { ...pl, jobId: 'j1', state: 'running' });
        assert.equal((await store.listPlacements({ activeOnly: true })).length, 1);
        await store.updatePlacement('t-a', { state: 'done' });
        assert.equal((await store.listPlacements({ activeOnly: true })).length, 0);
        const usage = { taskId: 't-a', studyId: 's1', siteId: 'a', siteInstitution: 'aiims', siteCountry: 'IN', resourceId: 'hpc', institution: 'aiims', country: 'IN',
          scheduler: 'slurm', cpuSeconds: 1.5, gpuSeconds: 0, wallSeconds: 2, cpuBasis: 'cgroup', jobId: 'j1', recordedAt: now };
        assert.equal(await store.addUsage(usage), true);
        assert.equal(await store.addUsage({ ...usage, cpuSeconds: 7 }), false, 'a second report for one task is not recorded');
        assert.deepEqual(await store.listUsage('s1'), [usage]);
        await store.putModelCard({ studyId: 's1', json: { a: 1 }, markdown: '# card', auditHead: 'h', createdAt: now });
        await store.putModelCard({ studyId: 's1', json: { a: 2 }, markdown: '# later', auditHead: 'h2', createdAt: now + 1 });
        assert.deepEqual(await store.getModelCard('s1'), { studyId: 's1', json: { a: 1 }, markdown: '# card', auditHead: 'h', createdAt: now }, 'the first card stays');
      });
    });

    describe('audit chain and privacy ledger', () => {
      it('appends entries one at a time from concurrent appenders, and rolls one back with its transaction', { skip }, async () => {
        const start = await store.auditHead();
        await Promise.all(Array.from({ length: 12 }, (_, i) => (i % 2 ? store : other).appendAuditRow((h) => auditRow(h.seq + 1, h.hash))));
        const rows = await store.listAuditRows({ after: start.seq });
        assert.deepEqual(rows.map((r) => r.seq), Array.from({ length: 12 }, (_, i) => start.seq + i + 1));
        for (let i = 1; i < rows.length; i++) assert.equal(rows[i]!.prev_hash, rows[i - 1]!.hash, 'each entry links to the head it saw');
        const head = await store.auditHead();
        assert.deepEqual(head, { seq: rows.at(-1)!.seq, hash: rows.at(-1)!.hash });
        await assert.rejects(store.transaction(async (tx) => {
          await tx.appendAuditRow((h) => auditRow(h.seq + 1, h.hash));
          throw new Error('the event failed');
        }), /the event failed/);
        assert.deepEqual(await store.auditHead(), head);
        assert.equal((await store.listAuditRows({ after: start.seq, limit: 5 })).length, 5);
      });

      it('appends many entries under one take of the head, in order, or none with their transaction', { skip }, async () => {
        const start = await store.auditHead();
        const chain = (h: { seq: number; hash: string }, n: number) => {
          const out = [];
          let prev = h.hash;
          for (let i = 1; i <= n; i++) {
            const row = auditRow(h.seq + i, prev);
            out.push(row);
            prev = row.hash;
          }
          return out;
        };
        // More than one INSERT's worth, from two appenders at once.
        await Promise.all([store.appendAuditRows((h) => chain(h, 1200)), other.appendAuditRows((h) => chain(h, 3))]);
        const rows = await store.listAuditRows({ after: start.seq });
        assert.deepEqual(rows.map((r) => r.seq), Array.from({ length: 1203 }, (_, i) => start.seq + i + 1));
        for (let i = 1; i < rows.length; i++) assert.equal(rows[i]!.prev_hash, rows[i - 1]!.hash, 'each entry links to the one before');
        const head = await store.auditHead();
        assert.deepEqual(head, { seq: rows.at(-1)!.seq, hash: rows.at(-1)!.hash });
        assert.deepEqual(await store.appendAuditRows(() => []), []);
        await assert.rejects(store.transaction(async (tx) => {
          await tx.appendAuditRows((h) => chain(h, 2));
          throw new Error('the event failed');
        }), /the event failed/);
        assert.deepEqual(await store.auditHead(), head);
      });

      it('keeps one ledger row per release and reports each site\'s latest total', { skip }, async () => {
        const eps = [0.3127845612345678, 0.4890123456789012, 0.6123456789012345];
        for (let r = 1; r <= 3; r++) {
          assert.equal(await store.recordSpend({ taskId: `st.r${r}.a`, studyId: 'st', siteId: 'a', round: r, spend: spend(eps[r - 1]!), at: 1000 + r }), true);
        }
        assert.equal(await store.recordSpend({ taskId: 'st.r1.b', studyId: 'st', siteId: 'b', round: 1, spend: spend(0.25), at: 2000 }), true);
        // The same task again (a masked update re-sent to a restarted SecAgg+ session): kept once.
        assert.equal(await store.recordSpend({ taskId: 'st.r3.a', studyId: 'st', siteId: 'a', round: 3, spend: spend(0.99), at: 3000 }), false);
        await store.recordSpend({ taskId: 'other.r1.a', studyId: 'other', siteId: 'a', round: 1, spend: spend(0.1), at: 4000 });
        const sites = await store.studySpend('st');
        assert.deepEqual(sites.map((x) => x.siteId), ['a', 'b']);
        const a = sites[0]!;
        assert.equal(a.epsilon, eps[2], 'ε round-trips exactly (double precision)');
        assert.deepEqual({ releases: a.releases, steps: a.steps, lastRound: a.lastRound, budget: a.budget, delta: a.delta, noise: a.noiseMultiplier },
          { releases: 3, steps: 300, lastRound: 3, budget: { epsilon: 1, delta: 1e-3 }, delta: 1e-3, noise: 2.403717 });
        assert.equal(sites[1]!.releases, 1);
        assert.deepEqual((await store.ledgerRows('st')).map((r) => r.task_id), ['st.r1.a', 'st.r1.b', 'st.r2.a', 'st.r3.a']);
        assert.equal((await store.ledgerRows('other')).length, 1);
      });
    });

    describe('asynchronous studies', () => {
      const A = 's-async';
      const at = (id: string, siteId: string) => ({ ...task(id, siteId), study_id: A });
      const contribution = (taskId: string, siteId: string, version: number) => ({ task_id: taskId, study_id: A, site_id: siteId, version, base_version: 0, staleness: version - 1, weight: 0.5, status: 'folded', num_examples: 10, at: now + version });
      const version = (v: number) => ({ studyId: A, round: 1, version: v, now: now + v, deadlineAt: now + 5000 + v, model: { id: `${A}.v${v}`, study_id: A, round: v, digest: `d${v}`, size: 1, created_at: now + v }, metrics: [{ study_id: A, round: v, site_id: null, phase: 'async', name: 'staleness.mean', value: 0.5 }] });

      it('issues tasks one by one into an open round only, and expires an open task once', { skip }, async () => {
        await store.createStudy({ ...study(A), current_round: 0 });
        await assert.rejects(store.issueTasks(A, 1, [at('as-a1', 'a')]), StoreConflict, 'no such round yet');
        await store.openRound({ ...round(1), study_id: A, kind: 'async' }, [at('as-a1', 'a')]);
        await store.issueTasks(A, 1, [at('as-b1', 'b')]);
        const before = await storeDigest(store);
        await assert.rejects(store.issueTasks(A, 1, [at('as-b2', 'b'), at('as-a1', 'a')]), StoreConflict, 'a taken task id');
        assert.deepEqual(await storeDigest(store), before, 'and nothing of it stays');
        assert.deepEqual((await store.listTasks(A, 1)).map((t) => t.id), ['as-a1', 'as-b1']);
        const both = await settle([store.expireTask('as-b1', now + 1), other.expireTask('as-b1', now + 1)]);
        assert.deepEqual(both.ok.sort(), [false, true], 'one of two expiries closes it');
        assert.equal((await store.getTask('as-b1'))?.status, 'expired');
      });

      it('buffers accepted updates until a version folds them, and commits each version exactly once', { skip }, async () => {
        await store.issueTasks(A, 1, [at('as-b2', 'b')]);
        await store.acceptUpdate({ ...update('as-b2', 'b'), study_id: A, received_at: now + 2 });
        await store.acceptUpdate({ ...update('as-a1', 'a'), study_id: A, received_at: now + 3 });
        const buffered = await store.unfoldedUpdates(A, 1);
        assert.deepEqual(buffered.map((u) => u.task_id), ['as-b2', 'as-a1'], 'oldest first');
        assert.ok(typeof buffered[0]!.digest === 'string' && typeof buffered[0]!.size === 'number' && typeof buffered[0]!.received_at === 'number');
        const tries = await settle([store, other, store].map((s) => s.commitVersion({ ...version(1), contributions: [contribution('as-b2', 'b', 1)] })));
        assert.equal(tries.ok.length, 1, 'of concurrent folds of one version exactly one commits');
        assert.ok(tries.errors.every((e) => e instanceof StoreConflict), String(tries.errors));
        assert.equal((await store.getStudy(A))?.current_round, 1);
        assert.equal((await store.getRound(A, 1))?.deadline_at, now + 5001, 'the next version is due later');
        assert.equal((await store.getRound(A, 1))?.status, 'open', 'the round stays open');
        assert.deepEqual((await store.unfoldedUpdates(A, 1)).map((u) => u.task_id), ['as-a1']);
        assert.deepEqual(await store.listContributions(A), [contribution('as-b2', 'b', 1)]);
        const before = await storeDigest(store);
        await assert.rejects(store.commitVersion({ ...version(3), contributions: [contribution('as-a1', 'a', 3)] }), StoreConflict, 'out of order');
        await assert.rejects(store.commitVersion({ ...version(2), contributions: [contribution('as-b2', 'b', 2)] }), StoreConflict, 'an update folded twice');
        assert.deepEqual(await storeDigest(store), before);
        assert.deepEqual((await store.asyncTasks(A, 1, 'm-none', ['as-b2'])).map((t) => t.id), ['as-b2'], 'no open task: only the one named');
        assert.deepEqual((await store.asyncTasks(A, 1, 'm0', [])).map((t) => t.id).sort(), ['as-a1', 'as-b1', 'as-b2'], 'every task against m0');
        await store.issueTasks(A, 1, [at('as-a2', 'a')]);
        assert.deepEqual((await store.asyncTasks(A, 1, 'm-none', [])).map((t) => t.id), ['as-a2'], 'the open one');
        await store.commitRound({ studyId: A, round: 1, now: now + 9, metrics: [] });
        await assert.rejects(store.commitVersion({ ...version(2), contributions: [] }), StoreConflict, 'a closed round folds nothing');
        assert.deepEqual((await store.listMetrics(A)).map((m) => [m.round, m.name]), [[1, 'staleness.mean']]);
      });
    });

    describe('touchSites', () => {
      it('writes the last-seen time of every named site in one call, and of none when it names none', { skip }, async () => {
        const was = await Promise.all(['a', 'b'].map(async (id) => (await store.getSite(id))!.last_seen_at));
        await store.touchSites(['a', 'b', 'no-such-site'], now + 123);
        assert.deepEqual([(await store.getSite('a'))?.last_seen_at, (await store.getSite('b'))?.last_seen_at], [now + 123, now + 123]);
        await store.touchSites([], now + 200);
        assert.equal((await store.getSite('a'))?.last_seen_at, now + 123);
        // Back as they were, for the tests after this one.
        for (const [i, id] of ['a', 'b'].entries()) if (was[i] !== null) await store.touchSite(id, was[i]!);
      });
    });

    describe('storeDigest', () => {
      it('covers every table, audit chain and ledger included, and sees an UPDATE that keeps the row count', { skip }, async () => {
        const d = await storeDigest(store);
        for (const t of ['sites', 'studies', 'tasks', 'refusals', 'audit_log', 'audit_head', 'privacy_ledger', 'request_nonces', 'study_governance', 'governance_events', 'compute_usage', 'study_cohorts', 'kv']) {
          assert.ok(d[t], `table ${t} is in the digest`);
        }
        await store.touchSite('a', now + 99);
        const after = await storeDigest(store);
        assert.notEqual(after.sites, d.sites, 'a changed column changes the table digest');
        assert.equal(after.sites!.split(':')[0], d.sites!.split(':')[0], 'with the same row count');
        assert.deepEqual({ ...after, sites: '' }, { ...d, sites: '' }, 'and no other table');
        assert.equal((await storeDigest(store, { except: ['sites'] })).sites, undefined);
      });
    });
  });
}
