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

/**
 * Must run inside a transaction (the caller's), so the lock holds until the entries are committed. Every audited
 * write of every coordinator queues on that lock, so it is held for as few round trips as can be: one statement
 * that locks and reads the head, the entries built (and signed) here, and on PostgreSQL one statement per 500 entries
 * that writes them, the last one moving the head too (a data-modifying WITH); SQLite, one writer at a time anyway,
 * moves the head in a statement of its own.
 */
export async function appendAuditRows(tx: Db, build: (head: { seq: number; hash: string }) => AuditLogTable[], dialect: 'sqlite' | 'postgres'): Promise<AuditLogTable[]> {
  // A no-op UPDATE … RETURNING: what it returns is the head no other writer can move until this transaction ends.
  const head = await tx.updateTable('audit_head').set((eb) => ({ seq: eb.ref('seq') })).where('id', '=', 1).returning(['seq', 'hash']).executeTakeFirstOrThrow();
  const rows = build({ seq: num(head.seq), hash: head.hash });
  const last = rows.at(-1);
  if (!last) return rows;
  for (let i = 0; i < rows.length; i += AUDIT_ROWS_PER_INSERT) {
    const batch = rows.slice(i, i + AUDIT_ROWS_PER_INSERT);
    if (dialect === 'postgres' && i + AUDIT_ROWS_PER_INSERT >= rows.length) {
      await tx.with('moved', (db) => db.updateTable('audit_head').set({ seq: last.seq, hash: last.hash }).where('id', '=', 1)).insertInto('audit_log').values(batch).execute();
    } else await tx.insertInto('audit_log').values(batch).execute();
  }
  if (dialect === 'sqlite') await tx.updateTable('audit_head').set({ seq: last.seq, hash: last.hash }).where('id', '=', 1).execute();
  return rows;
}

/** 9 columns each: far under either driver's bind-parameter limit. */
const AUDIT_ROWS_PER_INSERT = 500;

/** One entry: `appendAuditRows` with one row. */
export async function appendAuditRow(tx: Db, build: (head: { seq: number; hash: string }) => AuditLogTable, dialect: 'sqlite' | 'postgres'): Promise<AuditLogTable> {
  return (await appendAuditRows(tx, (head) => [build(head)], dialect))[0]!;
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
