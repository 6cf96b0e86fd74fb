/**
 * `storeDigest(store)`: one SHA-256 per table over its whole contents (audit chain, privacy ledger, nonces,
 * everything), so a test proves "this refused request changed nothing" by comparing contents, not row counts
 * (a count misses an UPDATE, or a row swapped for another). Rows are hashed as canonical JSON, sorted, so the
 * physical order a database returns them in does not matter. `except` leaves out tables a request may change
 * legitimately even when refused (e.g. `request_nonces`: a refused signed request still spends its nonce).
 */
import { createHash } from 'node:crypto';
import type { Store } from './store.js';

function canonical(v: unknown): unknown {
  if (v instanceof Uint8Array) return `bytes:${Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('hex')}`;
  if (typeof v === 'bigint') return Number(v);
  if (Array.isArray(v)) return v.map(canonical);
  if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, canonical((v as Record<string, unknown>)[k])]));
  return v;
}

export interface DigestOptions {
  /** Tables left out. */
  except?: string[];
  /** Columns left out, per table. */
  ignoreColumns?: Record<string, string[]>;
  /** Rows left out, per table. */
  ignoreRows?: Record<string, (row: Record<string, unknown>) => boolean>;
}

/** The entry of storeDigest's answer for the blob store's contents (uploads in progress are not blobs). */
export const BLOBS = '(blobs)';

/** Table name (and BLOBS) → `<rows>:<sha256 of the sorted rows>` (the count first, so a failing comparison reads well). */
export async function storeDigest(store: Store, opts: DigestOptions = {}): Promise<Record<string, string>> {
  const tables = await store.dumpTables();
  const out: Record<string, string> = {};
  for (const name of Object.keys(tables).sort()) {
    if (opts.except?.includes(name)) continue;
    const drop = opts.ignoreColumns?.[name] ?? [];
    const skipRow = opts.ignoreRows?.[name] ?? (() => false);
    const rows = tables[name]!.filter((r) => !skipRow(r)).map((r) => JSON.stringify(canonical(Object.fromEntries(Object.entries(r).filter(([k]) => !drop.includes(k)))))).sort();
    out[name] = `${rows.length}:${createHash('sha256').update(rows.join('\n')).digest('hex')}`;
  }
  // Model versions' and updates' bytes (store.blobs): content-addressed, so the digests and sizes are their contents.
  if (!opts.except?.includes(BLOBS)) {
    const blobs = (await store.blobs.list()).map((b) => `${b.digest}:${b.size}`);
    out[BLOBS] = `${blobs.length}:${createHash('sha256').update(blobs.join('\n')).digest('hex')}`;
  }
  return out;
}

/**
 * What a running coordinator changes by itself, whatever the requests: a site's last-seen time, the round
 * engine's lease on a study and its last-drive time, the readiness probe's write.
 */
export const LIVE: Pick<DigestOptions, 'ignoreColumns' | 'ignoreRows'> = {
  ignoreColumns: { sites: ['last_seen_at'], studies: ['claimed_by', 'claimed_until'] },
  ignoreRows: { kv: (r) => r.key === 'readiness_probe' || /^study:.*:driven_at$/.test(String(r.key)) },
};

/**
 * For "a refused request changed nothing" against a running coordinator: what a refusal still writes by design
 * (the nonce its signature spent, so it cannot be replayed; the refusal row and its audit entry, so it is on
 * record) and what moves underneath regardless (a site's last-seen time on any signed request, the round
 * engine renewing its lease on a study). Everything else must be byte-for-byte unchanged.
 */
export const REFUSAL_TRAIL: DigestOptions = {
  except: ['request_nonces', 'refusals', 'audit_log', 'audit_head'],
  ...LIVE,
};
