/**
 * The long-polls' wake-up for tasks another coordinator issued: one look at the store announces each newly issued
 * task's site once, on the bus the long-polls wait on (a real SQLite store; the tasks are written by another
 * handle, as another coordinator would, so this process's engine says nothing).
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore } from '../store/store.js';
import { EventBus, type CoordinatorEvent } from './events.js';
import { TaskWake } from './task-wake.js';

it('announces the sites of tasks issued elsewhere once each, and nothing for delivered ones', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-wake-'));
  const store = await openStore(join(dir, 'setu.db'));
  try {
    const now = Date.now();
    for (const id of ['a', 'b', 'c']) await store.createSite({ id, name: id, institution: 'I', jurisdiction: 'IN', credential_hash: `h-${id}`, public_key: null, status: 'active', created_at: now, last_seen_at: null });
    await store.createStudy({ id: 's', name: 's', spec: '{}', status: 'running', current_round: 0, participants: null, created_by: 'x', created_at: now, updated_at: now, claimed_by: null, claimed_until: null, error: null });
    await store.putModelVersion({ id: 'm0', study_id: 's', round: 0, digest: 'd', size: 1, created_at: now });
    const task = (site: string, round: number, at: number) => ({ id: `s.r${round}.${site}`, study_id: 's', round, site_id: site, kind: 'fit', model_version_id: 'm0', config: '{}', status: 'issued', created_at: at, deadline_at: at + 60_000, delivered_at: null, done_at: null });
    const round = (r: number, at: number) => ({ study_id: 's', round: r, status: 'open', kind: 'fit', opened_at: at, deadline_at: at + 60_000, committed_at: null, model_version_id: null });
    const bus = new EventBus();
    const heard: string[][] = [];
    bus.on((e: CoordinatorEvent) => void (e.type === 'tasks' && heard.push([...e.siteIds].sort())));
    const wake = new TaskWake(store, bus);
    await wake.look();
    assert.deepEqual(heard, [], 'nothing issued, nothing announced');
    await store.openRound(round(1, now), [task('a', 1, now), task('b', 1, now)]);
    await store.markDelivered('s.r1.b', now + 1);
    await wake.look();
    assert.deepEqual(heard, [['a']], 'the issued task\'s site; the delivered one has its task already');
    await wake.look();
    assert.deepEqual(heard, [['a']], 'announced once');
    await store.commitRound({ studyId: 's', round: 1, now: now + 2, metrics: [] });
    // A coordinator whose clock is a little behind: its tasks are older than the newest seen, still in the window.
    await store.openRound(round(2, now - 5000), [task('c', 2, now - 5000)]);
    await wake.look();
    assert.deepEqual(heard, [['a'], ['c']]);
    // Tasks this process announced itself (the engine's event names them) are not announced a second time.
    wake.start();
    try {
      await store.openRound(round(3, now + 10), [task('a', 3, now + 10), task('b', 3, now + 10)]);
      bus.emit({ type: 'tasks', siteIds: ['a'], taskIds: ['s.r3.a'] });
      await wake.look();
      assert.deepEqual(heard, [['a'], ['c'], ['a'], ['b']], 'only the task nobody announced');
    } finally {
      wake.stop();
    }
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
