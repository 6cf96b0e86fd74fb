/**
 * The audit chain in SQL. `appendAudit(tx, key, fields)` adds one signed entry INSIDE the caller's
 * transaction, so an event and its audit entry commit together or not at all:
 *
 *   await store.transaction(async (tx) => {
 *     … the change itself …
 *     await appendAudit(tx, ctx.audit.key, { actor: user.id, kind: 'study.approved', subject: studyId, data: {…} });
 *   });
 *
 * Route modules reach the key as `ctx.audit.key` (RouteContext), or call `ctx.audit.append(fields)` for an
 * event that has no transaction of its own. Appends are serialised on the one-row `audit_head`: the
 * first statement is an UPDATE of that row, which takes its row lock in PostgreSQL (a second coordinator
 * waits until this transaction ends) and the write lock in SQLite, so there is exactly one chain. The
 * head also records the count and last hash, so deleting the newest entries is detected as well.
 */
import type { KeyObject } from 'node:crypto';
import type { Kysely, Transaction } from 'kysely';
import type { Database } from '../store/schema.js';
import type { Store } from '../store/store.js';
import { signCheckpoint, type AuditCheckpoint } from '../protocol/audit-checkpoint.js';
import { canonicalJson, parseJsonStrict, type JsonValue } from '../protocol/canonical-json.js';
import { GENESIS_HASH, appendEntry, exportChain, verifyChain, type AppendFields, type AuditEntry, type ChainVerdict } from './audit-chain.js';

type Db = Kysely<Database> | Transaction<Database>;
const num = (v: unknown) => (typeof v === 'number' ? v : Number(v));

export interface AuditKey {
  privateKey: KeyObject;
  /** Raw Ed25519 public key, base64url. */
  publicKeyRaw: string;
}

/** Appends one entry inside `tx` and returns it. Throws (rolling the caller's transaction back) on failure. */
export async function appendAudit(tx: Transaction<Database>, key: AuditKey, fields: AppendFields): Promise<AuditEntry> {
  // Lock first (no-op UPDATE), read second: the read then sees the head no other writer can move.
  await tx.updateTable('audit_head').set((eb) => ({ seq: eb.ref('seq') })).where('id', '=', 1).execute();
  const head = await tx.selectFrom('audit_head').select(['seq', 'hash']).where('id', '=', 1).executeTakeFirstOrThrow();
  const seq = num(head.seq);
  const prev = seq === 0 ? null : ({ seq, hash: head.hash } as AuditEntry);
  const e = appendEntry(prev, fields, key.privateKey);
  await tx.insertInto('audit_log').values({ seq: e.seq, ts: e.ts, actor: e.actor, kind: e.kind, subject: e.subject, data: canonicalJson(e.data), prev_hash: e.prevHash, hash: e.hash, sig: e.sig }).execute();
  await tx.updateTable('audit_head').set({ seq: e.seq, hash: e.hash }).where('id', '=', 1).execute();
  return e;
}

/** Entries in seq order (optionally from seq > after, at most limit). Data that is no longer JSON is kept as a string so verify names it. */
export async function listAudit(db: Db, opts: { after?: number; limit?: number } = {}): Promise<AuditEntry[]> {
  let q = db.selectFrom('audit_log').selectAll().orderBy('seq');
  if (opts.after !== undefined) q = q.where('seq', '>', opts.after);
  if (opts.limit !== undefined) q = q.limit(opts.limit);
  return (await q.execute()).map((r) => {
    let data: JsonValue;
    try {
      data = parseJsonStrict(r.data);
    } catch {
      data = r.data;
    }
    return { seq: num(r.seq), ts: num(r.ts), actor: r.actor, kind: r.kind, subject: r.subject, data, prevHash: r.prev_hash, hash: r.hash, sig: r.sig };
  });
}

export async function auditHead(db: Db): Promise<{ count: number; head: string }> {
  const h = await db.selectFrom('audit_head').select(['seq', 'hash']).where('id', '=', 1).executeTakeFirst();
  return h ? { count: num(h.seq), head: h.hash } : { count: 0, head: GENESIS_HASH };
}

/** The coordinator's view of its audit log: append outside a transaction, read, verify, export. */
export class AuditLog {
  constructor(
    readonly store: Store,
    readonly key: AuditKey,
  ) {}

  /** For events without a transaction of their own (e.g. a refused update). */
  append(fields: AppendFields): Promise<AuditEntry> {
    return this.store.transaction((tx) => appendAudit(tx, this.key, fields));
  }

  entries(opts: { after?: number; limit?: number } = {}): Promise<AuditEntry[]> {
    return listAudit(this.store.db, opts);
  }

  head(): Promise<{ count: number; head: string }> {
    return auditHead(this.store.db);
  }

  /** Every hash, signature and link, and the stored head (which catches a deleted tail). */
  async verify(): Promise<ChainVerdict> {
    const [entries, head] = [await this.entries(), await this.head()];
    return verifyChain(entries, this.key.publicKeyRaw, { expected: { count: head.count, head: head.head } });
  }

  /** The head as a signed checkpoint (protocol/audit-checkpoint.ts): handed to sites with each task, kept as witnesses. */
  async checkpoint(now = Date.now()): Promise<AuditCheckpoint> {
    const h = await this.head();
    return signCheckpoint({ count: h.count, head: h.head }, now, this.key.privateKey, this.key.publicKeyRaw);
  }

  async export(now = Date.now()): Promise<string> {
    return exportChain(await this.entries(), this.key, now);
  }
}
