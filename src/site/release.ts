/**
 * What makes a task retried after a crash release exactly what its first attempt would have, at no new privacy
 * cost (issue 10: "a crash at a site never costs privacy twice").
 *
 *  - The noise of a task is not drawn from the OS: it comes from a seed derived with HKDF-SHA256 from this site's
 *    own secret (`noise.secret`, 32 random bytes, mode 600, written and fsynced before the first private task
 *    trains, never sent anywhere) and the study and task ids. Every other input of a fit (global weights, batch
 *    stream, client state, dropout stream) is already fixed until the coordinator acknowledges the result, so an
 *    attempt killed mid-training and run again after a restart releases the same bytes. Without the secret the
 *    seed is unpredictable, so the noise is as good as fresh to anyone else; two tasks never share a seed.
 *  - Every fit result this site queues is also kept as the round's release (`studies/<id>/releases/r<round>.*`),
 *    after it has been uploaded too. A coordinator that restarts a round (a SecAgg+ round after a coordinator
 *    restart) and asks again for a round this site already answered gets that same release, not a new training
 *    from the batch stream that has since moved on. The last KEEP_ROUNDS rounds are kept.
 *  - `releases.jsonl` lists every release queued, with the digest of its tensors: what left the site, for the
 *    site's own audit (and the tests that compare a crashed run with an uninterrupted one).
 */
import { appendFileSync, closeSync, existsSync, fsyncSync, openSync, readFileSync, readdirSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { createHash, hkdfSync, randomBytes } from 'node:crypto';
import { ensureDir, fsyncDir, removeAllDurably, writeAtomic, type PendingResult, type SiteState } from './state.js';
import type { TaskMessage, ResultMeta } from '../protocol/api.js';
import { RESULT_META_KEY } from '../protocol/api.js';
import { decodeSafetensors, encodeSafetensors } from '../protocol/safetensors.js';
import type { Weights } from '../protocol/tensors.js';

export const NOISE_SECRET_FILE = 'noise.secret';
export const RELEASE_LOG = 'releases.jsonl';
/** Rounds whose release is kept after upload: the current one and the one before (a restart reopens at most the open round). */
export const KEEP_ROUNDS = 2;

/** This site's noise secret, made (and fsynced) on first use. One agent per state directory (lock.ts), so no race. */
export function noiseSecret(state: SiteState): Buffer {
  const f = state.file(NOISE_SECRET_FILE);
  if (existsSync(f)) {
    const s = readFileSync(f);
    if (s.length !== 32) throw new Error(`${f}: the site's noise secret must be 32 bytes, found ${s.length}; restore it from a backup (a new one would change the noise of tasks already charged)`);
    return s;
  }
  const s = randomBytes(32);
  writeAtomic(f, s, 0o600);
  return s;
}

/** The 32-byte seed of a task's DP noise: HKDF-SHA256(site secret, study, task). Same task, same seed. */
export function taskNoiseSeed(state: SiteState, studyId: string, taskId: string): Uint8Array {
  const info = Buffer.from(`setu/dp-noise/v1\u0000${studyId}\u0000${taskId}`, 'utf8');
  return new Uint8Array(hkdfSync('sha256', noiseSecret(state), Buffer.from('setu site noise'), info, 32));
}

/** sha256 over the tensors of a safetensors body (names sorted, raw bytes): equal iff the released values are equal. */
export function tensorDigest(body: Uint8Array): string {
  return weightsDigest(decodeSafetensors(body).weights);
}

export function weightsDigest(w: Weights): string {
  const h = createHash('sha256');
  for (const k of Object.keys(w).sort()) {
    const d = w[k]!.data;
    h.update(k).update('\u0000').update(JSON.stringify(w[k]!.shape)).update(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
  }
  return h.digest('hex');
}

interface ReleaseRecord {
  taskId: string;
  round: number;
  modelVersionId: string;
  contentType: PendingResult['contentType'];
  commit: PendingResult['commit'];
  digest: string;
  at: string;
  /** The compute the release cost, so a resent release still reports it (an agent killed between keeping the
   * release and queuing its result would otherwise lose that task's usage; the coordinator dedupes by task). */
  usage?: PendingResult['usage'];
}

function releasesDir(state: SiteState, studyId: string): string {
  return ensureDir(join(state.studyPath(studyId), 'releases'));
}

/**
 * Keeps a fit result as its round's release (before it is queued), appends it to the release log and drops the
 * releases of rounds older than KEEP_ROUNDS.
 */
export function keepRelease(state: SiteState, task: TaskMessage, p: PendingResult): string {
  const dir = releasesDir(state, task.studyId);
  const digest = tensorDigest(p.body);
  const kept = join(dir, `r${task.round}.body`);
  writeAtomic(kept, p.body);
  const rec: ReleaseRecord = { taskId: task.taskId, round: task.round, modelVersionId: task.modelVersionId, contentType: p.contentType, commit: p.commit, digest, at: new Date().toISOString(), ...(p.usage ? { usage: p.usage } : {}) };
  writeAtomic(join(dir, `r${task.round}.json`), JSON.stringify(rec));
  appendDurably(join(state.studyPath(task.studyId), RELEASE_LOG), JSON.stringify({ taskId: task.taskId, round: task.round, digest, at: rec.at }) + '\n');
  pruneReleases(dir, task.round);
  return kept;
}

/**
 * keepRelease for a release written to a file (release-file.ts): `bodyFile` (complete, fsynced, its tensor digest
 * `digest`) is renamed to the round's release, not copied; returns where it now is (the caller queues it from there
 * by hard link: state.ts savePendingFile).
 */
export function keepReleaseFile(state: SiteState, task: TaskMessage, p: Omit<PendingResult, 'body'>, bodyFile: string, digest: string): string {
  const dir = releasesDir(state, task.studyId);
  const kept = join(dir, `r${task.round}.body`);
  renameSync(bodyFile, kept);
  fsyncDir(dir);
  const rec: ReleaseRecord = { taskId: task.taskId, round: task.round, modelVersionId: task.modelVersionId, contentType: p.contentType, commit: p.commit, digest, at: new Date().toISOString(), ...(p.usage ? { usage: p.usage } : {}) };
  writeAtomic(join(dir, `r${task.round}.json`), JSON.stringify(rec));
  appendDurably(join(state.studyPath(task.studyId), RELEASE_LOG), JSON.stringify({ taskId: task.taskId, round: task.round, digest, at: rec.at }) + '\n');
  pruneReleases(dir, task.round);
  return kept;
}

/** Where a release is written before it is kept (keepReleaseFile): beside the kept ones, so the rename stays on one filesystem. */
export function releaseStagingFile(state: SiteState, task: TaskMessage): string {
  return join(releasesDir(state, task.studyId), `r${task.round}.${randomBytes(4).toString('hex')}.tmp`);
}

function pruneReleases(dir: string, round: number): void {
  // One fsync of the directory for all of them (they go together; a power cut that leaves one back is harmless).
  const old = readdirSync(dir).filter((f) => {
    const m = /^r(\d+)\.(json|body)$/.exec(f);
    return m && Number(m[1]) <= round - KEEP_ROUNDS;
  });
  removeAllDurably(dir, old.map((f) => join(dir, f)));
}

/**
 * The release this site already made for the task's round, from the same global model, ready to queue under this
 * task's id; undefined when it has none (then the task trains).
 */
export function releasedFor(state: SiteState, task: TaskMessage): PendingResult | undefined {
  if (task.kind !== 'fit') return undefined;
  const dir = join(state.studyPath(task.studyId), 'releases');
  const jf = join(dir, `r${task.round}.json`), bf = join(dir, `r${task.round}.body`);
  if (!existsSync(jf) || !existsSync(bf)) return undefined;
  const rec = JSON.parse(readFileSync(jf, 'utf8')) as ReleaseRecord;
  if (rec.round !== task.round || rec.modelVersionId !== task.modelVersionId) return undefined;
  let body: Uint8Array = new Uint8Array(readFileSync(bf));
  if (tensorDigest(body) !== rec.digest) throw new Error(`${bf}: the kept release of round ${task.round} does not match its digest; the state directory is damaged`);
  if (rec.taskId !== task.taskId) body = retitled(body, task.taskId);
  return { taskId: task.taskId, studyId: task.studyId, contentType: rec.contentType, body, commit: rec.commit, ...(rec.usage ? { usage: rec.usage } : {}) };
}

/** The same tensors under another task id (the result's metadata names its task). */
function retitled(body: Uint8Array, taskId: string): Uint8Array {
  const d = decodeSafetensors(body);
  const meta = JSON.parse(d.metadata[RESULT_META_KEY]!) as ResultMeta;
  return encodeSafetensors(d.weights, { ...d.metadata, [RESULT_META_KEY]: JSON.stringify({ ...meta, taskId }) });
}

/** The release log of a study: one line per release queued (a retried task that trained again adds a line). */
export function releaseLog(state: SiteState, studyId: string): { taskId: string; round: number; digest: string; at: string }[] {
  const f = join(state.studyPath(studyId), RELEASE_LOG);
  if (!existsSync(f)) return [];
  const out: { taskId: string; round: number; digest: string; at: string }[] = [];
  for (const l of readFileSync(f, 'utf8').split('\n')) {
    try {
      if (l) out.push(JSON.parse(l) as { taskId: string; round: number; digest: string; at: string });
    } catch {
      // A line cut by a power cut mid-append: the release it names was not queued (the queue is written after it).
    }
  }
  return out;
}

function appendDurably(file: string, line: string): void {
  appendFileSync(file, line, { mode: 0o600 });
  const fd = openSync(file, 'r+');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
