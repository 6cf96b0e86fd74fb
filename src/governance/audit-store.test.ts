/**
 * The audit chain in SQL, on every backend: concurrent appenders (two coordinators on one database) build
 * one unforked chain; an append rolls back with its event; and editing, deleting, inserting or reordering
 * rows in the database is caught by verify, which names the first bad entry.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createPublicKey } from 'node:crypto';
import { openStore, type Store } from '../store/store.js';
import { openRawDatabase } from '../store/raw.js';
import type { Kysely } from 'kysely';
import { SQL_BACKENDS } from '../testing/backends.js';
import { generateSigningKeys, publicKeyToRaw } from '../protocol/signing.js';
import { AuditLog, appendAudit, appendAuditBatch, type AuditKey } from './audit-store.js';

const backends = SQL_BACKENDS; // the tampering needs a raw connection

for (const be of backends) {
  describe(`audit store (${be.name})`, async () => {
    const skip = await be.skip();
    let s1: Store, s2: Store, cleanup: () => Promise<void>;
    let raw: Kysely<any>; // the database edited behind the store's back, as an attacker with access would
    let log1: AuditLog, log2: AuditLog;
    const k = generateSigningKeys();
    const key: AuditKey = { privateKey: k.privateKey, publicKeyRaw: publicKeyToRaw(createPublicKey(k.privateKey)) };
    before(async () => {
      if (skip) return;
      const o = await be.open();
      cleanup = o.cleanup;
      s1 = await openStore(o.url);
      raw = await openRawDatabase(o.url);
      // Two coordinators share one database in production on PostgreSQL only; SQLite's driver is synchronous,
      // so a second connection in this same process would block the first: use one store there.
      s2 = be.name === 'postgres' ? await openStore(o.url) : s1;
      log1 = new AuditLog(s1, key);
      log2 = new AuditLog(s2, key);
    });
    after(async () => {
      if (skip) return;
      await raw.destroy();
      await s1.close();
      if (s2 !== s1) await s2.close();
      await cleanup();
    });

    it(`serialises concurrent appends${be.name === 'postgres' ? ' from two coordinators' : ''} into one chain`, { skip }, async () => {
      await Promise.all(Array.from({ length: 30 }, (_, i) => (i % 2 ? log1 : log2).append({ actor: `c${i % 2}`, kind: 'task.issued', subject: `t${i}`, data: { i } })));
      const v = await log1.verify();
      assert.equal(v.ok, true, JSON.stringify(v));
      assert.equal((await log2.entries()).map((e) => e.seq).join(','), Array.from({ length: 30 }, (_, i) => i + 1).join(','));
    });

    it('rolls an append back with the transaction it belongs to', { skip }, async () => {
      const head = await log1.head();
      await assert.rejects(
        s1.transaction(async (tx) => {
          await appendAudit(tx, key, { actor: 'x', kind: 'site.revoked', subject: 's' });
          throw new Error('the event failed');
        }),
        /the event failed/,
      );
      assert.deepEqual(await log1.head(), head);
      assert.equal((await log1.entries()).length, head.count);
    });

    const db = () => raw;
    const expectBad = async (seq: number | null, re: RegExp) => {
      const v = await log1.verify();
      assert.equal(v.ok, false, 'tampering went unnoticed');
      if (!v.ok) {
        assert.match(v.reason, re);
        if (seq !== null) assert.equal(v.firstBad.seq, seq);
      }
    };

    it('detects an edited entry', { skip }, async () => {
      const e = (await log1.entries())[9]!;
      await db().updateTable('audit_log').set({ data: '{"i":999}' }).where('seq', '=', 10).execute();
      await expectBad(10, /edited/);
      await db().updateTable('audit_log').set({ data: JSON.stringify(e.data) }).where('seq', '=', 10).execute();
      assert.equal((await log1.verify()).ok, true);
    });

    it('detects a deleted entry, in the middle and at the end', { skip }, async () => {
      const rows = await db().selectFrom('audit_log').selectAll().where('seq', 'in', [12, 30]).orderBy('seq').execute();
      await db().deleteFrom('audit_log').where('seq', '=', 12).execute();
      await expectBad(13, /deleted/);
      await db().insertInto('audit_log').values(rows[0]!).execute();
      await db().deleteFrom('audit_log').where('seq', '=', 30).execute();
      await expectBad(null, /truncated/);
      await db().insertInto('audit_log').values(rows[1]!).execute();
      assert.equal((await log1.verify()).ok, true);
    });

    it('detects an inserted entry', { skip }, async () => {
      // A forged entry appended after the head, with a valid-looking link but signed by another key.
      const last = (await log1.entries()).at(-1)!;
      const other = generateSigningKeys();
      const other2: AuditKey = { privateKey: other.privateKey, publicKeyRaw: other.publicKeyRaw };
      const forged = await s2.transaction(async (tx) => {
        const e = await appendAudit(tx, other2, { actor: 'mallory', kind: 'model.released', subject: 'x' });
        throw Object.assign(new Error('rollback'), { e });
      }).catch((err: { e: import('./audit-chain.js').AuditEntry }) => err.e);
      assert.equal(forged.prevHash, last.hash);
      await db().insertInto('audit_log').values({ seq: forged.seq, ts: forged.ts, actor: forged.actor, kind: forged.kind, subject: forged.subject, data: 'null', prev_hash: forged.prevHash, hash: forged.hash, sig: forged.sig }).execute();
      await expectBad(forged.seq, /bad signature/);
      await db().deleteFrom('audit_log').where('seq', '=', forged.seq).execute();
      assert.equal((await log1.verify()).ok, true);
    });

    it('detects reordered entries', { skip }, async () => {
      // Swap the seq numbers of entries 5 and 6 (via a free seq to dodge the primary key).
      await db().updateTable('audit_log').set({ seq: 1_000_000 }).where('seq', '=', 5).execute();
      await db().updateTable('audit_log').set({ seq: 5 }).where('seq', '=', 6).execute();
      await db().updateTable('audit_log').set({ seq: 6 }).where('seq', '=', 1_000_000).execute();
      await expectBad(5, /edited|reordered/);
      await db().updateTable('audit_log').set({ seq: 1_000_000 }).where('seq', '=', 5).execute();
      await db().updateTable('audit_log').set({ seq: 5 }).where('seq', '=', 6).execute();
      await db().updateTable('audit_log').set({ seq: 6 }).where('seq', '=', 1_000_000).execute();
      assert.equal((await log1.verify()).ok, true);
    });

    it('appends a batch of signed entries under one take of the head, interleaved with single appends, into one chain', { skip }, async () => {
      const head = await log1.head();
      const batch = Array.from({ length: 600 }, (_, i) => ({ actor: 'coordinator', kind: 'task.issued' as const, subject: `b${i}`, data: { i } }));
      await Promise.all([s1.transaction((tx) => appendAuditBatch(tx, key, batch)), log2.append({ actor: 'c', kind: 'task.issued', subject: 'single', data: {} })]);
      const v = await log1.verify();
      assert.equal(v.ok, true, JSON.stringify(v));
      const added = (await log1.entries()).slice(head.count);
      assert.equal(added.length, 601);
      const mine = added.filter((e) => e.subject.startsWith('b')).map((e) => e.subject);
      assert.deepEqual(mine, batch.map((b) => b.subject), 'the batch in order, unbroken');
    });
  });
}
