/**
 * The privacy ledger on every SQL backend: a release is recorded once per task (a re-sent one is kept once and
 * reported as a repeat), ε values round-trip exactly, and each site's latest total comes with its release and
 * step counts.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Store } from './store.js';
import { ledgerRows, priv, recordSpend, studySpend } from './privacy.js';
import { STORE_BACKENDS } from '../testing/backends.js';
import type { PrivacySpend } from '../protocol/api.js';

const backends = STORE_BACKENDS;

const spend = (epsilon: number): PrivacySpend => ({ mechanism: 'dp-sgd', sampleRate: 0.0201005, noiseMultiplier: 2.403717, steps: 100, epsilon, delta: 1e-3, budgetEpsilon: 1, budgetDelta: 1e-3 });

for (const be of backends) {
  describe(`privacy ledger (${be.name})`, async () => {
    const skip = await be.skip();
    let s: Store, cleanup: () => Promise<void>;
    before(async () => {
      if (skip) return;
      const o = await be.open();
      cleanup = o.cleanup;
      s = await Store.open(o.url);
    });
    after(async () => {
      if (skip) return;
      await s.close();
      await cleanup();
    });

    it('keeps one row per release and reports each site\'s latest total', { skip }, async () => {
      const db = priv(s.db);
      const eps = [0.3127845612345678, 0.4890123456789012, 0.6123456789012345];
      for (let r = 1; r <= 3; r++) {
        assert.equal(await recordSpend(db, { taskId: `st.r${r}.a`, studyId: 'st', siteId: 'a', round: r, spend: spend(eps[r - 1]!), at: 1000 + r }), true);
      }
      assert.equal(await recordSpend(db, { taskId: 'st.r1.b', studyId: 'st', siteId: 'b', round: 1, spend: spend(0.25), at: 2000 }), true);
      // The same task again (a masked update re-sent to a restarted SecAgg+ session): kept once.
      assert.equal(await recordSpend(db, { taskId: 'st.r3.a', studyId: 'st', siteId: 'a', round: 3, spend: spend(0.99), at: 3000 }), false);
      await recordSpend(db, { taskId: 'other.r1.a', studyId: 'other', siteId: 'a', round: 1, spend: spend(0.1), at: 4000 });

      const sites = await studySpend(db, 'st');
      assert.deepEqual(sites.map((x) => x.siteId), ['a', 'b']);
      const a = sites[0]!;
      assert.equal(a.epsilon, eps[2], 'ε round-trips exactly (double precision)');
      assert.deepEqual({ releases: a.releases, steps: a.steps, lastRound: a.lastRound, budget: a.budget, delta: a.delta, noise: a.noiseMultiplier },
        { releases: 3, steps: 300, lastRound: 3, budget: { epsilon: 1, delta: 1e-3 }, delta: 1e-3, noise: 2.403717 });
      assert.equal(sites[1]!.releases, 1);
      assert.equal((await ledgerRows(db, 'st')).length, 4);
      assert.equal((await ledgerRows(db, 'other')).length, 1);
    });
  });
}
