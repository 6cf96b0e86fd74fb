/** The result route's round progress: counted in the store at most once a second, and always when it may close the round. */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { openStore, type Store } from '../store/store.js';
import { RoundTally, TALLY_REFRESH_MS } from './round-tally.js';

const T0 = 1_700_000_000_000;
const SITES = ['a', 'b', 'c', 'd'];

async function roundOfFour(): Promise<Store> {
  const store = await openStore('memory:');
  for (const id of SITES) await store.createSite({ id, name: id, institution: null, jurisdiction: null, credential_hash: `h-${id}`, public_key: null, status: 'active', created_at: T0, last_seen_at: null });
  await store.createStudy({ id: 's1', name: 'heart', spec: '{}', status: 'running', current_round: 0, participants: null, created_by: 'admin', created_at: T0, updated_at: T0, claimed_by: null, claimed_until: null, error: null });
  const m0 = await store.blobs.put(new Uint8Array([1, 2, 3]));
  await store.putModelVersion({ id: 'm0', study_id: 's1', round: 0, digest: m0.digest, size: m0.size, created_at: T0 });
  await store.openRound(
    { study_id: 's1', round: 1, status: 'open', kind: 'fit', opened_at: T0, deadline_at: T0 + 60_000, committed_at: null, model_version_id: null },
    SITES.map((s) => ({ id: `t-${s}`, study_id: 's1', round: 1, site_id: s, kind: 'fit', model_version_id: 'm0', config: '{}', status: 'issued', created_at: T0, deadline_at: T0 + 60_000, delivered_at: null, done_at: null })),
  );
  return store;
}

const accept = (store: Store, site: string) =>
  store.acceptUpdate({ task_id: `t-${site}`, study_id: 's1', round: 1, site_id: site, digest: null, size: null, num_examples: 1, metrics: '{}', received_at: T0 });

it('counts the store once a second, adds its own accepts in between, and counts again for the answer that may close the round', async () => {
  const store = await roundOfFour();
  let t = T0;
  let counts = 0;
  const counted = new Proxy(store, { get: (s, p) => (p === 'roundProgress' ? (...a: [string, number]) => (counts++, s.roundProgress(...a)) : Reflect.get(s, p)) });
  const tally = new RoundTally(counted, () => t);
  await accept(store, 'a');
  assert.deepEqual(await tally.accepted('s1', 1), { tasks: 4, updates: 1, closedWithoutResult: 0 });
  assert.equal(counts, 1);
  await accept(store, 'b');
  assert.deepEqual(await tally.accepted('s1', 1), { tasks: 4, updates: 2, closedWithoutResult: 0 }, 'within the second: the count plus its own accept');
  assert.equal(counts, 1, 'the store was not counted again');
  // A task closed without a result elsewhere (another coordinator, the task-error route) is seen after the second.
  await store.refuseTask('t-c', T0);
  t += TALLY_REFRESH_MS;
  await accept(store, 'd');
  assert.deepEqual(await tally.accepted('s1', 1), { tasks: 4, updates: 3, closedWithoutResult: 1 }, 'a second later: counted again');
  assert.equal(counts, 2);
  const tally2 = new RoundTally(counted, () => t);
  await tally2.accepted('s1', 1);
  counts = 0;
  // An estimate that says the round is complete is never answered as such: the store is counted.
  assert.deepEqual(await tally2.accepted('s1', 1), { tasks: 4, updates: 3, closedWithoutResult: 1 });
  assert.equal(counts, 1, 'a possibly closing answer comes from the store');
  await store.close();
});
