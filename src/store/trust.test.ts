/**
 * Trust-layer store functions on every SQL backend: the replay defence must let exactly one of many
 * concurrent inserts of a nonce win, and old nonces are pruned.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Store } from './store.js';
import { cohortSize, declareCohorts, pruneNonces, rememberNonce } from './trust.js';
import { STORE_BACKENDS } from '../testing/backends.js';

const backends = STORE_BACKENDS;

for (const be of backends) {
  describe(`trust store (${be.name})`, async () => {
    const skip = await be.skip();
    let s1: Store, s2: Store, cleanup: () => Promise<void>;
    before(async () => {
      if (skip) return;
      const o = await be.open();
      cleanup = o.cleanup;
      s1 = await Store.open(o.url);
      // A second coordinator's connection (PostgreSQL; SQLite's synchronous driver would block itself in one process).
      s2 = be.name === 'postgres' ? await Store.open(o.url) : s1;
    });
    after(async () => {
      if (skip) return;
      await s1.close();
      if (s2 !== s1) await s2.close();
      await cleanup();
    });

    it('records a nonce once: of 20 concurrent inserts exactly one wins', { skip }, async () => {
      const rs = await Promise.all(Array.from({ length: 20 }, (_, i) => rememberNonce((i % 2 ? s1 : s2).db, 'site-x', 'nonce-aaaaaaaaaaaaaaaa', 1000)));
      assert.equal(rs.filter(Boolean).length, 1);
      assert.equal(await rememberNonce(s1.db, 'site-y', 'nonce-aaaaaaaaaaaaaaaa', 1000), true, 'nonces are per key');
    });

    it('prunes nonces older than the cutoff only', { skip }, async () => {
      await rememberNonce(s1.db, 'site-x', 'nonce-old-000000000000', 10);
      await rememberNonce(s1.db, 'site-x', 'nonce-new-000000000000', 5000);
      assert.equal(await pruneNonces(s1.db, 2000), 3); // the two at ts 1000 and the one at 10
      assert.equal(await rememberNonce(s1.db, 'site-x', 'nonce-new-000000000000', 5000), false);
      assert.equal(await rememberNonce(s1.db, 'site-x', 'nonce-old-000000000000', 10), true);
    });

    it('keeps one declared cohort size per site and dataset, replaced on redeclaration', { skip }, async () => {
      await s1.createSite({ id: 'site-c', name: 'c', institution: null, jurisdiction: null, credential_hash: 'none:site-c', public_key: null, status: 'active', created_at: 1, last_seen_at: null });
      await declareCohorts(s1.db, 'site-c', { heart: 100, other: 5 }, 1);
      await declareCohorts(s1.db, 'site-c', { heart: 120 }, 2);
      assert.equal(await cohortSize(s1.db, 'site-c', 'heart'), 120);
      assert.equal(await cohortSize(s1.db, 'site-c', 'other'), 5);
      assert.equal(await cohortSize(s1.db, 'site-c', 'none'), undefined);
    });
  });
}
