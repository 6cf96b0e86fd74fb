/**
 * The audit chain over the store. `appendAudit(tx, key, fields)` adds one signed entry INSIDE the caller's
 * transaction, so an event and its audit entry commit together or not at all:
 *
 *   await store.transaction(async (tx) => {
 *     … the change itself, on tx …
 *     await appendAudit(tx, ctx.audit.key, { actor: user.id, kind: 'study.approved', subject: studyId, data: {…} });
 *   });
 *
 * Route modules reach the key as `ctx.audit.key` (RouteContext), or call `ctx.audit.append(fields)` for an
 * event that has no transaction of its own. The store serialises appends on the chain's head
 * (`Store.appendAuditRow`), so there is exactly one chain even with several coordinators; the head also
 * records the count and last hash, so deleting the newest entries is detected as well.
 */
import type { KeyObject } from 'node:crypto';
import type { AuditRow, Store } from '../store/store.js';
import { signCheckpoint, type AuditCheckpoint } from '../protocol/audit-checkpoint.js';
import { canonicalJson, parseJsonStrict, type JsonValue } from '../protocol/canonical-json.js';
import { GENESIS_HASH, appendEntry, exportChain, verifyChain, type AppendFields, type AuditEntry, type ChainVerdict } from './audit-chain.js';

export interface AuditKey {
  privateKey: KeyObject;
  /** Raw Ed25519 public key, base64url. */
  publicKeyRaw: string;
}

/**
 * Appends one entry inside `tx` (or in a transaction of its own) and returns it. Throws (rolling the caller's
 * transaction back) on failure. Inside a batch of accepted results the entry is queued to the batch's end
 * (Store.queueAuditRow): it commits with the rest, its place in the chain not known yet, and undefined is returned.
 */
export async function appendAudit(tx: Store, key: AuditKey, fields: AppendFields): Promise<AuditEntry | undefined> {
  let entry: AuditEntry | undefined;
  const build = (head: { seq: number; hash: string }) => {
    const prev = head.seq === 0 ? null : ({ seq: head.seq, hash: head.hash } as AuditEntry);
    const e = appendEntry(prev, fields, key.privateKey);
    entry = e;
    return rowOf(e);
  };
  if (tx.queueAuditRow(build)) return undefined;
  await tx.appendAuditRow(build);
  return entry;
}

/**
 * Appends several entries, in order, under one take of the chain's head (Store.appendAuditRows): a round's
 * `task.issued` entries, say, which one by one held the head's lock for two statements each.
 */
export async function appendAuditBatch(tx: Store, key: AuditKey, list: AppendFields[]): Promise<AuditEntry[]> {
  const entries: AuditEntry[] = [];
  await tx.appendAuditRows((head) => {
    let prev = head.seq === 0 ? null : ({ seq: head.seq, hash: head.hash } as AuditEntry);
    return list.map((fields) => {
      const entry = appendEntry(prev, fields, key.privateKey);
      entries.push(entry);
      prev = entry;
      return rowOf(entry);
    });
  });
  return entries;
}

/** An entry as the store keeps it. */
function rowOf(e: AuditEntry): AuditRow {
  return { seq: e.seq, ts: e.ts, actor: e.actor, kind: e.kind, subject: e.subject, data: canonicalJson(e.data), prev_hash: e.prevHash, hash: e.hash, sig: e.sig };
}

/** A stored row as an entry. Data that is no longer JSON is kept as a string so verify names it. */
function toEntry(r: AuditRow): AuditEntry {
  let data: JsonValue;
  try {
    data = parseJsonStrict(r.data);
  } catch {
    data = r.data;
  }
  return { seq: r.seq, ts: r.ts, actor: r.actor, kind: r.kind, subject: r.subject, data, prevHash: r.prev_hash, hash: r.hash, sig: r.sig };
}

/** Entries in seq order (optionally from seq > after, at most limit), parsed. */
export async function listAudit(store: Store, opts: { after?: number; limit?: number } = {}): Promise<AuditEntry[]> {
  return (await store.listAuditRows(opts)).map(toEntry);
}

/** The coordinator's view of its audit log: append outside a transaction, read, verify, export. */
export class AuditLog {
  constructor(
    readonly store: Store,
    readonly key: AuditKey,
  ) {}

  /** For events without a transaction of their own (e.g. a refused update). */
  async append(fields: AppendFields): Promise<AuditEntry> {
    const entry = await this.store.transaction((tx) => appendAudit(tx, this.key, fields));
    // A transaction of its own is no batch of accepted results: its entry is appended at once.
    if (!entry) throw new Error('an audit entry of its own transaction was queued');
    return entry;
  }

  /** Entries in seq order (optionally from seq > after, at most limit). */
  entries(opts: { after?: number; limit?: number } = {}): Promise<AuditEntry[]> {
    return listAudit(this.store, opts);
  }

  async head(): Promise<{ count: number; head: string }> {
    const h = await this.store.auditHead();
    return h.seq === 0 ? { count: 0, head: GENESIS_HASH } : { count: h.seq, head: h.hash };
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

  private recent: { at: number; checkpoint: Promise<AuditCheckpoint> } | undefined;

  /**
   * A signed checkpoint at most `maxAgeMs` old, for the task messages: every delivered task carried a fresh one (a
   * read of the head and a signature each), a round of N sites N of them within a second. One taken a moment ago is
   * as true a witness (it is signed with the time it was taken); the audit routes still sign a fresh one.
   */
  recentCheckpoint(now = Date.now(), maxAgeMs = 1000): Promise<AuditCheckpoint> {
    const r = this.recent;
    if (r && now >= r.at && now - r.at < maxAgeMs) return r.checkpoint;
    const checkpoint = this.checkpoint(now);
    this.recent = { at: now, checkpoint };
    // A failed read is not kept: the next task tries again.
    checkpoint.catch(() => {
      if (this.recent?.checkpoint === checkpoint) this.recent = undefined;
    });
    return checkpoint;
  }

  async export(now = Date.now()): Promise<string> {
    return exportChain(await this.entries(), this.key, now);
  }
}
