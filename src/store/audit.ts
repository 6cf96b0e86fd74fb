/**
 * The audit chain's tables (migration 0002_trust): `audit_log` and the one-row `audit_head`. Appends are
 * serialised on the head: the first statement is an UPDATE of that row, which takes its row lock in PostgreSQL
 * (a second coordinator waits until this transaction ends) and the write lock in SQLite, so there is exactly
 * one chain. The head also records the count and last hash, so deleting the newest entries is detected.
 * Linking and signing an entry is governance/audit-chain.ts's; this file only keeps rows.
 */
import type { Kysely, Transaction } from 'kysely';
import type { AuditLogTable, Database } from './schema.js';

type Db = Kysely<Database> | Transaction<Database>;
const num = (v: unknown) => (typeof v === 'number' ? v : Number(v));

/** Must run inside a transaction (the caller's), so the lock holds until the entry is committed. */
export async function appendAuditRow(tx: Db, build: (head: { seq: number; hash: string }) => AuditLogTable): Promise<AuditLogTable> {
  // Lock and read in one statement (a no-op UPDATE … RETURNING): what it returns is the head no other writer can
  // move, and the lock is held one round trip less than with a separate SELECT.
  const head = await tx.updateTable('audit_head').set((eb) => ({ seq: eb.ref('seq') })).where('id', '=', 1).returning(['seq', 'hash']).executeTakeFirstOrThrow();
  const row = build({ seq: num(head.seq), hash: head.hash });
  await tx.insertInto('audit_log').values(row).execute();
  await tx.updateTable('audit_head').set({ seq: row.seq, hash: row.hash }).where('id', '=', 1).execute();
  return row;
}

export async function listAuditRows(db: Db, opts: { after?: number; limit?: number }): Promise<AuditLogTable[]> {
  let q = db.selectFrom('audit_log').selectAll().orderBy('seq');
  if (opts.after !== undefined) q = q.where('seq', '>', opts.after);
  if (opts.limit !== undefined) q = q.limit(opts.limit);
  return (await q.execute()).map((r) => ({ ...r, seq: num(r.seq), ts: num(r.ts) }));
}

export async function auditHead(db: Db): Promise<{ seq: number; hash: string }> {
  const h = await db.selectFrom('audit_head').select(['seq', 'hash']).where('id', '=', 1).executeTakeFirstOrThrow();
  return { seq: num(h.seq), hash: h.hash };
}
