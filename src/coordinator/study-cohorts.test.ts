/** The study cohorts' cache: a snapshot is read once, an absent one every time, and each store has its own. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryStore } from '../store/memory-store.js';
import { studyCohortsOf } from './study-cohorts.js';
import type { Store } from '../store/store.js';

/** A store whose studyCohortSize calls are counted. */
function counted(store: Store): { store: Store; reads: () => number } {
  let n = 0;
  const real = store.studyCohortSize.bind(store);
  store.studyCohortSize = (study, site) => {
    n++;
    return real(study, site);
  };
  return { store, reads: () => n };
}

test('a study cohort is read once, an absent one each time, per store', async () => {
  const { store, reads } = counted(new MemoryStore());
  await store.declareCohorts('site-a', { heart: 120 }, 1);
  await store.snapshotStudyCohorts('study-1', 'heart', ['site-a', 'site-b'], 2);
  const c = studyCohortsOf(store);
  assert.equal(studyCohortsOf(store), c, 'one cache per store');
  assert.deepEqual([await c.get('study-1', 'site-a'), await c.get('study-1', 'site-a')], [120, 120]);
  assert.equal(reads(), 1, 'the snapshot was read once');
  // A later declaration changes the site's cohort, never the study's snapshot (what the cache relies on).
  await store.declareCohorts('site-a', { heart: 500 }, 3);
  assert.equal(await store.studyCohortSize('study-1', 'site-a'), 120);
  assert.equal(await c.get('study-1', 'site-a'), 120);
  // No snapshot for site-b (it had declared nothing): asked every time.
  const before = reads();
  assert.deepEqual([await c.get('study-1', 'site-b'), await c.get('study-1', 'site-b')], [undefined, undefined]);
  assert.equal(reads() - before, 2);
  const other = new MemoryStore();
  assert.notEqual(studyCohortsOf(other), c);
  assert.equal(await studyCohortsOf(other).get('study-1', 'site-a'), undefined, 'another store has its own');
});
