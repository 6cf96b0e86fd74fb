/**
 * Signed checkpoints of the audit chain's head: the coordinator's statement "at time ts my log held `count`
 * entries and the newest hashed to `head`", signed with its key (Ed25519, coordinator.key).
 *
 *   sig = Ed25519(coordinator key, "SETU-AUDIT-CHECKPOINT-V1\n" + canonicalJson({count, head, ts})), base64url
 *
 * The chain alone cannot show that its tail was cut or the whole log deleted: a shorter chain is still a valid
 * chain. A checkpoint kept somewhere the database's writer cannot reach (every site agent keeps the newest one it
 * was handed with a task; an auditor keeps the one an export or a verify gave) is a witness: a later log must hold
 * at least `count` entries and its entry number `count` must hash to `head`. Two signed checkpoints that cannot
 * both be true (the same count with two heads; a later one with fewer entries) are proof on their own.
 *
 * Lives in protocol because both ends need it: the site agent checks what it is handed, the auditor's CLI what
 * it fetched. Signing is here too (pure crypto); the coordinator is the only holder of the private key.
 */
import { sign, verify, type KeyObject } from 'node:crypto';
import { Type, type Static } from '@sinclair/typebox';
import { canonicalJson } from './canonical-json.js';
import { importPublicKey } from './signing.js';

const CHECKPOINT_PREFIX = 'SETU-AUDIT-CHECKPOINT-V1\n';
export const GENESIS_HEAD = '0'.repeat(64);

export const AuditCheckpointSchema = Type.Object(
  {
    /** Entries in the log (the seq of the newest); 0 for an empty log. */
    count: Type.Integer({ minimum: 0 }),
    /** Hash of entry `count` (64 zeros for an empty log). */
    head: Type.String({ pattern: '^[0-9a-f]{64}$' }),
    /** When the coordinator signed it, ms since the epoch. */
    ts: Type.Integer({ minimum: 0 }),
    /** The coordinator's raw Ed25519 public key, base64url. */
    publicKey: Type.String({ minLength: 1, maxLength: 200 }),
    sig: Type.String({ pattern: '^[A-Za-z0-9_-]{86}$' }),
  },
  { additionalProperties: false },
);
export type AuditCheckpoint = Static<typeof AuditCheckpointSchema>;

const message = (c: { count: number; head: string; ts: number }) => Buffer.from(CHECKPOINT_PREFIX + canonicalJson({ count: c.count, head: c.head, ts: c.ts }), 'utf8');

export function signCheckpoint(h: { count: number; head: string }, ts: number, privateKey: KeyObject, publicKeyRaw: string): AuditCheckpoint {
  return { count: h.count, head: h.head, ts, publicKey: publicKeyRaw, sig: sign(null, message({ ...h, ts }), privateKey).toString('base64url') };
}

/** Why a value is not a well-formed checkpoint signed by its own key (or by `pinnedKey`), or null when it is. */
export function checkpointProblem(cp: unknown, pinnedKey?: string): string | null {
  if (cp === null || typeof cp !== 'object' || Array.isArray(cp)) return 'checkpoint is not an object';
  const c = cp as Record<string, unknown>;
  if (!Number.isSafeInteger(c.count) || (c.count as number) < 0) return 'checkpoint count is not a non-negative integer';
  if (typeof c.head !== 'string' || !/^[0-9a-f]{64}$/.test(c.head)) return 'checkpoint head is not a sha256 hex digest';
  if (!Number.isSafeInteger(c.ts) || (c.ts as number) < 0) return 'checkpoint ts is not a non-negative integer';
  if (typeof c.publicKey !== 'string' || typeof c.sig !== 'string') return 'checkpoint needs publicKey and sig strings';
  if (pinnedKey !== undefined && c.publicKey !== pinnedKey) return `checkpoint is signed by key ${c.publicKey}, not ${pinnedKey}`;
  if (c.count === 0 && c.head !== GENESIS_HEAD) return 'checkpoint of an empty log must name the genesis head';
  let ok = false;
  try {
    ok = verify(null, message(c as AuditCheckpoint), importPublicKey(c.publicKey), Buffer.from(c.sig, 'base64url'));
  } catch {
    ok = false;
  }
  return ok ? null : 'checkpoint signature does not verify under its public key';
}

/**
 * What a newly seen checkpoint says about the one kept. `newer` and `same` are consistent; `older` is a stale
 * one (signed no later than the kept one, delivered late) and ignored; `conflict` means both cannot be true:
 * the log was rolled back or forked, or someone else signed. Without the entries between them a witness
 * cannot check that the newer one extends the older (the auditor's verify does that against the log).
 * "Signed later" compares the coordinators' clocks: coordinators sharing one store should keep them in step (NTP), or
 * a stale checkpoint from one whose clock runs ahead, delivered after a newer one, reads as a rollback. An agent
 * polls one task at a time, so it sees checkpoints in the order they were signed.
 */
export type CheckpointOrder = { order: 'newer' | 'same' | 'older' } | { order: 'conflict'; reason: string };

export function compareCheckpoints(kept: AuditCheckpoint, seen: AuditCheckpoint): CheckpointOrder {
  if (seen.publicKey !== kept.publicKey) return { order: 'conflict', reason: `signed by key ${seen.publicKey}, but the witness holds checkpoints of key ${kept.publicKey}` };
  if (seen.count === kept.count) {
    return seen.head === kept.head ? { order: 'same' } : { order: 'conflict', reason: `two heads for ${kept.count} entries: ${kept.head} (signed at ${kept.ts}) and ${seen.head} (signed at ${seen.ts}): the log was rewritten` };
  }
  if (seen.count > kept.count) return { order: 'newer' };
  if (seen.ts > kept.ts) {
    return { order: 'conflict', reason: `the log went back from ${kept.count} entries (signed at ${kept.ts}) to ${seen.count} (signed later, at ${seen.ts}): entries were deleted` };
  }
  return { order: 'older' };
}

/**
 * Checks a witness's checkpoint against a log the auditor holds (`count` entries, `hashAt(seq)` the stored hash of
 * entry seq). Null when the log extends the checkpoint.
 */
export function checkpointAgainstLog(cp: AuditCheckpoint, log: { count: number; hashAt(seq: number): string | undefined }): string | null {
  if (log.count < cp.count) {
    return log.count === 0
      ? `the log is empty, but the coordinator signed ${cp.count} entries (head ${cp.head}) at ${new Date(cp.ts).toISOString()}: the whole log was deleted`
      : `the log holds ${log.count} entries, but the coordinator signed ${cp.count} (head ${cp.head}) at ${new Date(cp.ts).toISOString()}: its tail was deleted`;
  }
  if (cp.count === 0) return null;
  const h = log.hashAt(cp.count);
  if (h !== cp.head) {
    return `entry seq ${cp.count} hashes to ${h ?? '(missing)'}, but the coordinator signed head ${cp.head} for ${cp.count} entries at ${new Date(cp.ts).toISOString()}: the log was rewound and rewritten`;
  }
  return null;
}

// ---------------------------------------------------------------- the witness file

export const WITNESS_FORMAT = 'setu-audit-witness-v1';

/** What a witness keeps (a site agent in its state dir, an auditor wherever it likes): the newest checkpoint, and proof of any contradiction. */
export interface WitnessFile {
  format: typeof WITNESS_FORMAT;
  /** Who keeps it (a site's name, an auditor's note), named when verify reports a disagreement. */
  holder: string;
  checkpoint: AuditCheckpoint;
  updatedAt: number;
  /** Signed checkpoints that contradicted the kept one (at most MAX_CONFLICTS, newest last): evidence on their own. */
  conflicts: { at: number; reason: string; checkpoint: AuditCheckpoint }[];
}
export const MAX_CONFLICTS = 20;

/**
 * Reads a witness: a witness file, a bare checkpoint (GET /v1/audit/checkpoint), or an audit export (its signed
 * header line). Throws with the reason when the text is none of these.
 */
export function parseWitness(text: string, fallbackHolder: string): WitnessFile {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    try {
      v = JSON.parse(text.split('\n', 1)[0]!); // an export: JSON Lines, the header first
    } catch {
      throw new Error(`not JSON: ${(e as Error).message}`);
    }
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not a JSON object');
  const o = v as Record<string, unknown>;
  if (o.format === WITNESS_FORMAT) {
    const p = checkpointProblem(o.checkpoint);
    if (p) throw new Error(`the witness holds no valid checkpoint: ${p}`);
    const conflicts = Array.isArray(o.conflicts) ? (o.conflicts as unknown[]).filter((c): c is WitnessFile['conflicts'][number] => !!c && typeof c === 'object' && 'checkpoint' in c && typeof (c as { reason?: unknown }).reason === 'string') : [];
    return { format: WITNESS_FORMAT, holder: typeof o.holder === 'string' && o.holder ? o.holder : fallbackHolder, checkpoint: o.checkpoint as AuditCheckpoint, updatedAt: Number(o.updatedAt) || 0, conflicts };
  }
  if (typeof o.format === 'string' && o.format.startsWith('setu-audit-v')) {
    // An export's header is a checkpoint of the log it was cut from.
    return { format: WITNESS_FORMAT, holder: fallbackHolder, checkpoint: { count: o.count, head: o.head, ts: o.exportedAt, publicKey: o.publicKey, sig: o.sig } as AuditCheckpoint, updatedAt: 0, conflicts: [] };
  }
  if ('count' in o && 'head' in o && 'sig' in o) return { format: WITNESS_FORMAT, holder: fallbackHolder, checkpoint: o as unknown as AuditCheckpoint, updatedAt: 0, conflicts: [] };
  throw new Error(`neither a witness file (${WITNESS_FORMAT}), a checkpoint nor an audit export`);
}

/**
 * The witness's rule for a checkpoint it is handed: keep the newest valid one, never go back, and keep a
 * contradicting one as evidence. Returns the new file (or the same object when nothing changed) and what happened.
 */
export function witnessSee(w: WitnessFile | undefined, seen: unknown, holder: string, now: number): { file: WitnessFile | undefined; outcome: 'first' | 'newer' | 'same' | 'older' | 'invalid' | 'conflict'; reason?: string } {
  const problem = checkpointProblem(seen, w?.checkpoint.publicKey);
  const cp = seen as AuditCheckpoint;
  if (!w) {
    if (problem) return { file: undefined, outcome: 'invalid', reason: problem };
    return { file: { format: WITNESS_FORMAT, holder, checkpoint: cp, updatedAt: now, conflicts: [] }, outcome: 'first' };
  }
  const order: CheckpointOrder = problem ? { order: 'conflict', reason: problem } : compareCheckpoints(w.checkpoint, cp);
  if (order.order === 'conflict') {
    // Only a checkpoint that verifies under its own key is evidence worth keeping; garbage is reported, not kept.
    if (checkpointProblem(seen) !== null) return { file: w, outcome: 'invalid', reason: order.reason };
    const conflicts = [...w.conflicts, { at: now, reason: order.reason, checkpoint: cp }].slice(-MAX_CONFLICTS);
    return { file: { ...w, conflicts, updatedAt: now }, outcome: 'conflict', reason: order.reason };
  }
  if (order.order === 'newer') return { file: { ...w, checkpoint: cp, updatedAt: now }, outcome: 'newer' };
  return { file: w, outcome: order.order };
}
