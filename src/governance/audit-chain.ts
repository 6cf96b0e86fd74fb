/**
 * The audit chain: an append-only, hash-chained log signed by the coordinator's key. Pure logic; the
 * coordinator stores entries in SQL and calls appendEntry inside the same transaction as the event.
 *
 *   hash = sha256 hex of canonicalJson({seq, ts, actor, kind, subject, data, prevHash})
 *   sig  = Ed25519(coordinator key, "SETU-AUDIT-V1\n" + hash), base64url
 *
 * The prefix separates audit signatures from request signatures made with any shared key. Because seq and
 * prevHash are inside the hash and the hash is signed, someone with write access to the database but not
 * the coordinator's private key cannot edit, delete, insert or reorder entries without verifyChain naming
 * the first entry that no longer fits. Truncating the tail leaves a valid shorter chain, so the head hash
 * and count must be kept elsewhere (an export, a model card, an auditor's note) and passed as `expected`.
 */
import { createHash, createPrivateKey, sign, verify, type KeyObject } from 'node:crypto';
import { canonicalJson, parseJsonStrict, type JsonValue } from '../protocol/canonical-json.js';
import { importPublicKey } from '../protocol/signing.js';
import { checkpointProblem, signCheckpoint, type AuditCheckpoint } from '../protocol/audit-checkpoint.js';

/** Events that matter to an auditor. Strings, not an enum, so they read the same in SQL and in exports. */
export const AUDIT_KINDS = [
  'invite.issued',
  'site.enrolled',
  'site.cohorts_declared', // a site changed the cohort sizes it declares (data: before and after)
  'user.enrolled',
  'key.changed',
  'site.revoked',
  'user.revoked',
  'study.proposed',
  'study.initial_weights', // the study lead set the model's initial weights (digest, tensors)
  'study.refused', // a policy check refused to start it; data lists the violations
  'study.approved',
  'study.declined',
  'study.withdrawn',
  'study.started',
  'study.completed',
  'study.stopped',
  'task.issued',
  'update.accepted',
  'update.refused',
  'task.failed', // a site could not run its task; data has its reason code and message
  'placement.refused', // no compute in the data's jurisdiction could take a placed task (data: reason, count)
  'aggregate.committed',
  'analytics.committed', // an analytics round committed: its query, each site's answer digest, refusals, the result's digest
  'privacy.spent',
  'compute.registered',
  'model.released',
] as const;
export type AuditKind = (typeof AUDIT_KINDS)[number];

export const GENESIS_HASH = '0'.repeat(64);
const SIG_PREFIX = 'SETU-AUDIT-V1\n';

export interface AuditEntry {
  /** 1 for the first entry, then +1 each. */
  seq: number;
  /** Milliseconds since the epoch. */
  ts: number;
  /** Who caused it: a user id, a site id, or "coordinator". */
  actor: string;
  kind: string;
  /** What it is about: a study id, a site id, an update digest… */
  subject: string;
  data: JsonValue;
  prevHash: string;
  hash: string;
  sig: string;
}

export interface AppendFields {
  ts?: number;
  actor: string;
  kind: AuditKind;
  subject: string;
  data?: JsonValue;
}

export class AuditError extends Error {
  override name = 'AuditError';
}

/** The hash of an entry's content (everything but hash and sig). Throws if data has no canonical JSON form. */
export function entryHash(e: Pick<AuditEntry, 'seq' | 'ts' | 'actor' | 'kind' | 'subject' | 'data' | 'prevHash'>): string {
  const body = canonicalJson({ seq: e.seq, ts: e.ts, actor: e.actor, kind: e.kind, subject: e.subject, data: e.data, prevHash: e.prevHash });
  return createHash('sha256').update(body, 'utf8').digest('hex');
}

/** Build the next entry after `prev` (null for the first), signed with the coordinator's private key. */
export function appendEntry(prev: AuditEntry | null, fields: AppendFields, privateKey: KeyObject | string): AuditEntry {
  if (!(AUDIT_KINDS as readonly string[]).includes(fields.kind)) throw new AuditError(`unknown audit kind ${JSON.stringify(fields.kind)}`);
  for (const k of ['actor', 'subject'] as const) {
    if (typeof fields[k] !== 'string' || fields[k] === '') throw new AuditError(`audit ${k} must be a non-empty string`);
  }
  const ts = fields.ts ?? Date.now();
  if (!Number.isSafeInteger(ts) || ts < 0) throw new AuditError('audit ts must be a non-negative integer of milliseconds');
  const content = {
    seq: prev ? prev.seq + 1 : 1,
    ts,
    actor: fields.actor,
    kind: fields.kind,
    subject: fields.subject,
    data: fields.data ?? null,
    prevHash: prev ? prev.hash : GENESIS_HASH,
  };
  let hash: string;
  try {
    hash = entryHash(content);
  } catch (e) {
    throw new AuditError(`audit data is not plain JSON: ${(e as Error).message}`);
  }
  const key = typeof privateKey === 'string' ? createPrivateKey(privateKey) : privateKey;
  const sig = sign(null, Buffer.from(SIG_PREFIX + hash, 'utf8'), key).toString('base64url');
  return { ...content, hash, sig };
}

export interface VerifyOptions {
  /** Verify a slice that continues from a trusted entry (seq and hash); defaults to the genesis. */
  from?: { seq: number; hash: string };
  /** The head and/or count recorded elsewhere: detects a truncated tail. */
  expected?: { head?: string; count?: number };
}

export type ChainVerdict =
  | { ok: true; head: string; count: number }
  | { ok: false; firstBad: { index: number; seq: number | null }; reason: string };

const HEX64 = /^[0-9a-f]{64}$/;
const SIG_RE = /^[A-Za-z0-9_-]{86}$/;

function malformed(e: unknown): string | null {
  if (e === null || typeof e !== 'object') return 'entry is not an object';
  const x = e as Record<string, unknown>;
  if (!Number.isSafeInteger(x.seq)) return 'seq is not an integer';
  if (!Number.isSafeInteger(x.ts)) return 'ts is not an integer';
  for (const k of ['actor', 'kind', 'subject', 'sig'] as const) if (typeof x[k] !== 'string') return `${k} is not a string`;
  if (typeof x.prevHash !== 'string' || !HEX64.test(x.prevHash)) return 'prevHash is not a sha256 hex digest';
  if (typeof x.hash !== 'string' || !HEX64.test(x.hash)) return 'hash is not a sha256 hex digest';
  if (!('data' in x)) return 'data is missing';
  // One spelling per signature: 64 bytes in unpadded base64url, re-encoding to itself.
  if (!SIG_RE.test(x.sig as string) || Buffer.from(x.sig as string, 'base64url').toString('base64url') !== x.sig) return 'sig is not a 64-byte base64url signature';
  return null;
}

/**
 * Recompute every hash, signature and link. Returns the first entry that does not fit and why, naming the
 * likely tampering: edited (content ≠ hash), forged (signature), deleted (seq gap), inserted (duplicate seq
 * or broken link), reordered (a seq that appears later), truncated (fewer entries than expected).
 */
export function verifyChain(entries: readonly AuditEntry[], publicKey: KeyObject | string, opts: VerifyOptions = {}): ChainVerdict {
  const key = typeof publicKey === 'string' ? importPublicKey(publicKey) : publicKey;
  const anchor = opts.from ?? { seq: 0, hash: GENESIS_HASH };
  const bad = (index: number, reason: string): ChainVerdict => {
    const s = (entries[index] as unknown as Record<string, unknown> | undefined)?.seq;
    return { ok: false, firstBad: { index, seq: Number.isSafeInteger(s) ? (s as number) : null }, reason };
  };
  const seqs = entries.map((e) => (e && typeof e === 'object' && Number.isSafeInteger(e.seq) ? e.seq : NaN));
  let prevHash = anchor.hash;
  let prevSeq = anchor.seq;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    const m = malformed(e);
    if (m) return bad(i, `entry at index ${i} is malformed: ${m}`);
    let h: string;
    try {
      h = entryHash(e);
    } catch (err) {
      return bad(i, `entry seq ${e.seq} is malformed: ${(err as Error).message}`);
    }
    if (h !== e.hash) return bad(i, `entry seq ${e.seq} was edited: its content does not match its hash`);
    let sigOk = false;
    try {
      sigOk = verify(null, Buffer.from(SIG_PREFIX + e.hash, 'utf8'), key, Buffer.from(e.sig, 'base64url'));
    } catch {
      sigOk = false;
    }
    if (!sigOk) return bad(i, `entry seq ${e.seq} has a bad signature: forged, or re-hashed without the coordinator's key`);
    const want = prevSeq + 1;
    if (e.seq > want) {
      const later = seqs.indexOf(want, i + 1);
      if (later >= 0) return bad(i, `entries reordered: seq ${e.seq} at index ${i} where seq ${want} was expected (found at index ${later})`);
      return bad(i, `entries deleted: seq ${want}${e.seq - 1 > want ? `..${e.seq - 1}` : ''} missing before seq ${e.seq}`);
    }
    if (e.seq < want) {
      const dup = seqs.lastIndexOf(e.seq, i - 1);
      if (dup >= 0 || e.seq <= anchor.seq) return bad(i, `entry inserted: seq ${e.seq} at index ${i} repeats an earlier seq`);
      return bad(i, `entries reordered: seq ${e.seq} at index ${i} comes after seq ${prevSeq}`);
    }
    if (e.prevHash !== prevHash) {
      return bad(i, `entry seq ${e.seq} does not link to the entry before it (prevHash mismatch): an entry was inserted, deleted or replaced`);
    }
    prevHash = e.hash;
    prevSeq = e.seq;
  }
  const count = entries.length;
  const exp = opts.expected;
  if (exp?.count !== undefined && count !== exp.count) {
    return {
      ok: false,
      firstBad: { index: count, seq: prevSeq + 1 },
      reason: count < exp.count ? `chain truncated: ${count} entries, expected ${exp.count}` : `chain has ${count} entries, expected ${exp.count}`,
    };
  }
  if (exp?.head !== undefined && prevHash !== exp.head) {
    return { ok: false, firstBad: { index: count, seq: prevSeq + 1 }, reason: `chain head ${prevHash} is not the expected head ${exp.head}: tail truncated or replaced` };
  }
  return { ok: true, head: prevHash, count };
}

// ---------------------------------------------------------------- export for external auditors

export const EXPORT_FORMAT = 'setu-audit-v2';

/**
 * JSON Lines: a first line naming the format, the coordinator's public key (raw base64url), the count, the head,
 * the time and the coordinator's signature over (count, head, exportedAt) (a signed checkpoint,
 * protocol/audit-checkpoint.ts), then one canonical-JSON entry per line. An auditor needs nothing else to re-run
 * verifyChain. Because the header is signed, cutting entries and rewriting the header's count and head to match
 * fails verification; the header is itself a witness for later logs and exports (`setu audit verify --witness`).
 * (v1 headers were unsigned: a cut export with a rewritten header verified as intact.)
 */
export function exportChain(entries: readonly AuditEntry[], signer: { privateKey: KeyObject; publicKeyRaw: string }, exportedAt = Date.now()): string {
  const head = entries.length ? entries[entries.length - 1]!.hash : GENESIS_HASH;
  const cp = signCheckpoint({ count: entries.length, head }, exportedAt, signer.privateKey, signer.publicKeyRaw);
  const lines = [canonicalJson({ format: EXPORT_FORMAT, publicKey: signer.publicKeyRaw, count: entries.length, head, exportedAt, sig: cp.sig })];
  for (const e of entries) lines.push(canonicalJson(e));
  return lines.join('\n') + '\n';
}

export interface ParsedExport {
  publicKey: string;
  count: number;
  head: string;
  exportedAt: number;
  /** The header as a checkpoint: verify it (checkpointProblem) before trusting count and head. */
  checkpoint: AuditCheckpoint;
  entries: AuditEntry[];
}

/** Parse an export (strictly: duplicate keys refused). Entries are returned as found; verifyExport judges them. */
export function parseExport(text: string): ParsedExport {
  const lines = text.split('\n').filter((l, i, a) => !(l === '' && i === a.length - 1));
  if (lines.length === 0) throw new AuditError('empty audit export');
  const parse = (l: string, n: number): Record<string, JsonValue> => {
    let v: JsonValue;
    try {
      v = parseJsonStrict(l);
    } catch (e) {
      throw new AuditError(`audit export line ${n}: ${(e as Error).message}`);
    }
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new AuditError(`audit export line ${n}: not a JSON object`);
    return v;
  };
  const h = parse(lines[0]!, 1);
  if (h.format === 'setu-audit-v1') throw new AuditError('audit export line 1: format setu-audit-v1 has an unsigned header that cannot be trusted; export again (setu audit export)');
  if (h.format !== EXPORT_FORMAT) throw new AuditError(`audit export line 1: format must be ${EXPORT_FORMAT}`);
  if (typeof h.publicKey !== 'string' || !Number.isSafeInteger(h.count) || typeof h.head !== 'string' || !Number.isSafeInteger(h.exportedAt) || typeof h.sig !== 'string') {
    throw new AuditError('audit export line 1: needs publicKey, count, head, exportedAt and sig');
  }
  const entries = lines.slice(1).map((l, i) => parse(l, i + 2) as unknown as AuditEntry);
  const checkpoint: AuditCheckpoint = { count: h.count as number, head: h.head, ts: h.exportedAt as number, publicKey: h.publicKey, sig: h.sig };
  return { publicKey: h.publicKey, count: h.count as number, head: h.head, exportedAt: h.exportedAt as number, checkpoint, entries };
}

/**
 * An export's verdict: its header's signature first (a rewritten count or head fails here), then the chain
 * against the signed count and head (a cut tail fails there).
 */
export function verifyExport(p: ParsedExport, publicKey: string = p.publicKey): ChainVerdict {
  const problem = checkpointProblem(p.checkpoint, publicKey);
  if (problem) return { ok: false, firstBad: { index: 0, seq: null }, reason: `export header: ${problem}: its count or head was rewritten, or it was not signed by this coordinator` };
  return verifyChain(p.entries, publicKey, { expected: { count: p.count, head: p.head } });
}
