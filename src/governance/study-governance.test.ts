/**
 * Governance decisions under concurrency, on every store backend (and, on PostgreSQL, from two coordinators'
 * connection pools): consent is never lost. A withdrawal and another site's approval raced 50 times are both in
 * the lifecycle every time, each with its event and audit entry; ten concurrent approvals of one site leave one
 * approval, the rest refused cleanly (409); ten concurrent proposals of one draft: one succeeds, the rest 409.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createPublicKey } from 'node:crypto';
import { openStore, StoreConflict, type Store } from '../store/store.js';
import { STORE_BACKENDS } from '../testing/backends.js';
import { generateSigningKeys, publicKeyToRaw } from '../protocol/signing.js';
import type { StudySpec } from '../protocol/api.js';
import { AuditLog, type AuditKey } from './audit-store.js';
import { GovernanceError, loadLifecycle, proposeStudy, siteDecision, type GovernanceDeps } from './study-governance.js';

const now = 1_700_000_000_000;
const SPEC = {} as StudySpec; // no `sites`: every active site is invited
const terms = { purpose: 'heart-disease risk model, research only' };
const RACES = 50;

/** A 409 as the API answers it: the lifecycle refused (GovernanceError 409) or a unique key was taken (StoreConflict). */
const isClean409 = (e: unknown) => (e instanceof GovernanceError && e.status === 409) || e instanceof StoreConflict;

for (const b of STORE_BACKENDS) {
  describe(`governance decisions under concurrency (${b.name})`, async () => {
    const skip = await b.skip();
    let store: Store, other: Store, cleanup: () => Promise<void>;
    let deps: GovernanceDeps[];
    const k = generateSigningKeys();
    const key: AuditKey = { privateKey: k.privateKey, publicKeyRaw: publicKeyToRaw(createPublicKey(k.privateKey)) };

    before(async () => {
      if (skip) return;
      const o = await b.open();
      cleanup = o.cleanup;
      store = await openStore(o.url);
      other = b.name === 'postgres' ? await openStore(o.url) : store; // a second coordinator on the same database
      deps = [{ store, audit: key }, { store: other, audit: key }];
      for (const id of ['sa', 'sb', 'sc']) {
        await store.createSite({ id, name: id, institution: null, jurisdiction: null, credential_hash: `none:${id}`, public_key: null, status: 'active', created_at: now, last_seen_at: null });
      }
    });
    after(async () => {
      if (skip) return;
      if (other !== store) await other.close();
      await store.close();
      await cleanup();
    });

    async function draft(id: string): Promise<void> {
      await store.createStudy({ id, name: id, spec: '{}', status: 'created', current_round: 0, participants: null, created_by: 'lead', created_at: now, updated_at: now, claimed_by: null, claimed_until: null, error: null });
    }

    it(`keeps both a withdrawal and another site's approval sent at the same moment, ${RACES} times`, { skip }, async () => {
      for (let i = 0; i < RACES; i++) {
        const id = `race-${i}`;
        await draft(id);
        await proposeStudy(deps[0]!, id, SPEC, 'lead', now);
        await siteDecision(deps[0]!, id, 'sa', { kind: 'approve', terms }, 'admin-a', now + 1);
        const [w, a] = await Promise.allSettled([
          siteDecision(deps[i % 2]!, id, 'sa', { kind: 'withdraw', reason: 'ethics board withdrew consent' }, 'admin-a', now + 2),
          siteDecision(deps[(i + 1) % 2]!, id, 'sb', { kind: 'approve', terms }, 'admin-b', now + 2),
        ]);
        assert.equal(w.status, 'fulfilled', `race ${i}: the withdrawal was answered ${w.status === 'rejected' ? String(w.reason) : ''}`);
        assert.equal(a.status, 'fulfilled', `race ${i}: the approval was answered ${a.status === 'rejected' ? String(a.reason) : ''}`);
        const l = (await loadLifecycle(store, id))!;
        assert.equal(l.approvals.sa?.status, 'withdrawn', `race ${i}: the withdrawal is in the study's governance state`);
        assert.equal(l.approvals.sb?.status, 'approved', `race ${i}: the approval is in the study's governance state`);
        const events = (await store.listEvents(id)).map((e) => `${e.kind} ${(e.data as { site?: string }).site ?? ''}`.trim());
        assert.deepEqual(events.sort(), ['study.approved sa', 'study.approved sb', 'study.proposed', 'study.withdrawn sa'], `race ${i}: each decision has its event`);
      }
      const log = new AuditLog(store, key);
      assert.equal((await log.verify()).ok, true, 'one unforked audit chain');
      const audited = (await log.entries()).filter((e) => e.kind === 'study.withdrawn' || e.kind === 'study.approved').length;
      assert.equal(audited, 3 * RACES, 'every decision is audited once');
    });

    it('ten concurrent approvals of one site: one approval, the rest a clean 409, none lost', { skip }, async () => {
      const id = 'approve-10';
      await draft(id);
      await proposeStudy(deps[0]!, id, SPEC, 'lead', now);
      const eventsBefore = (await store.listEvents(id)).length;
      const rs = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => siteDecision(deps[i % 2]!, id, 'sc', { kind: 'approve', terms }, 'admin-c', now + i)));
      const ok = rs.filter((r) => r.status === 'fulfilled').length;
      assert.equal(ok, 1, 'an approval is given once');
      for (const r of rs) if (r.status === 'rejected') assert.ok(isClean409(r.reason), `a repeated approval is refused with 409, got ${String(r.reason)}`);
      assert.equal((await loadLifecycle(store, id))!.approvals.sc?.status, 'approved');
      assert.equal((await store.listEvents(id)).length, eventsBefore + ok, 'one event per approval answered 200');
    });

    it('ten concurrent proposals of one draft: exactly one succeeds, the rest a clean 409', { skip }, async () => {
      const id = 'propose-10';
      await draft(id);
      const rs = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => proposeStudy(deps[i % 2]!, id, SPEC, 'lead', now)));
      assert.equal(rs.filter((r) => r.status === 'fulfilled').length, 1);
      for (const r of rs) if (r.status === 'rejected') assert.ok(isClean409(r.reason), `a repeated proposal is refused with 409, got ${String(r.reason)}`);
      assert.deepEqual((await store.listEvents(id)).map((e) => e.kind), ['study.proposed']);
    });
  });
}
