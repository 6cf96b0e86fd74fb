/**
 * What a site agent keeps on its own disk: its identity (site.key, the Ed25519 private key it made at
 * enrolment, mode 600, never sent anywhere; credential.json, its site id and name), per-study training state (batch-stream
 * position, client-side strategy state) and a result waiting to be uploaded. Every write is atomic
 * (temp file + rename), so a crash never leaves half a file, and a result is saved before it is sent,
 * so a coordinator outage or an agent crash loses nothing.
 */
import { closeSync, existsSync, fsyncSync, linkSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { UsageReport } from './placed.js';

/** Who this site is at the coordinator. Its requests are signed with site.key under key id = siteId. */
export interface Credential {
  coordinator: string;
  siteId: string;
  siteName: string;
}

/**
 * Atomic and durable: the bytes go to a temp file that is fsynced before it is renamed over the target, and the
 * directory is fsynced after the rename, so the new file (not an empty or old one) is what a power cut leaves.
 * The privacy account's "never under-count" and the noise secret depend on this, not only on process crashes.
 */
export function writeAtomic(file: string, data: string | Uint8Array, mode = 0o600): void {
  writeThenRename(file, data, mode, true);
  fsyncDir(dirname(file));
}

/**
 * Atomic, not durable: temp file + rename, no fsync. For a file that only shows state kept durably elsewhere
 * (status.json): a process crash leaves the old or the new version, never half of one; a power cut may leave the
 * old one or an empty one, which its reader takes as "no status yet". The four fsyncs of writeAtomic were a third of
 * a tiny task's disk work at the site (`setu bench live --cpu-prof`, two status writes a task).
 */
export function replaceFile(file: string, data: string | Uint8Array, mode = 0o600): void {
  writeThenRename(file, data, mode, false);
}

/** The bytes to a fresh temp file beside `file` (fsynced when `durable`), renamed over it. */
function writeThenRename(file: string, data: string | Uint8Array, mode: number, durable: boolean): void {
  const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  const fd = openSync(tmp, 'wx', mode);
  try {
    for (let off = 0; off < bytes.byteLength; ) off += writeSync(fd, bytes, off, bytes.byteLength - off);
    if (durable) fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
}

/** Creates a directory (and its parents) durably: each new entry's parent is fsynced. */
export function ensureDir(d: string): string {
  if (existsSync(d)) return d;
  ensureDir(dirname(d));
  try {
    mkdirSync(d, { mode: 0o700 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
  fsyncDir(dirname(d));
  return d;
}

/** Makes a directory entry change (a rename, a create, an unlink) durable. */
export function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Removes a file and makes the removal durable (a cleared pending result must not come back after a power cut). */
export function removeDurably(file: string): void {
  removeAllDurably(dirname(file), [file]);
}

/** Removes files of one directory and makes the removals durable with one fsync of it (none when nothing was there). */
export function removeAllDurably(dir: string, files: readonly string[]): void {
  let removed = false;
  for (const f of files) {
    if (!existsSync(f)) continue;
    rmSync(f, { force: true });
    removed = true;
  }
  if (removed) fsyncDir(dir);
}

const safe = (id: string) => id.replace(/[^A-Za-z0-9._-]/g, '_');

export class SiteState {
  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  get credentialFile(): string {
    return join(this.dir, 'credential.json');
  }

  credential(): Credential | undefined {
    if (!existsSync(this.credentialFile)) return undefined;
    return JSON.parse(readFileSync(this.credentialFile, 'utf8')) as Credential;
  }

  saveCredential(c: Credential): void {
    writeAtomic(this.credentialFile, JSON.stringify(c, null, 2));
  }

  get keyFile(): string {
    return join(this.dir, 'site.key');
  }

  /** The site's private signing key (PKCS#8 PEM), if it has made one. */
  privateKeyPem(): string | undefined {
    return existsSync(this.keyFile) ? readFileSync(this.keyFile, 'utf8') : undefined;
  }

  /** Saved before the public half is sent, so a crash during enrolment never loses a registered key. */
  saveKey(pem: string): void {
    writeAtomic(this.keyFile, pem, 0o600);
  }

  /** The study's own state folder (created, durably, on first use). */
  studyPath(studyId: string): string {
    return this.studyDir(studyId);
  }

  private studyDir(studyId: string): string {
    return ensureDir(join(this.dir, 'studies', safe(studyId)));
  }

  readJson<T>(studyId: string, name: string): T | undefined {
    const f = join(this.studyDir(studyId), name);
    return existsSync(f) ? (JSON.parse(readFileSync(f, 'utf8')) as T) : undefined;
  }

  readBytes(studyId: string, name: string): Uint8Array | undefined {
    const f = join(this.studyDir(studyId), name);
    return existsSync(f) ? new Uint8Array(readFileSync(f)) : undefined;
  }

  write(studyId: string, name: string, data: string | Uint8Array): void {
    writeAtomic(join(this.studyDir(studyId), name), data);
  }

  remove(studyId: string, name: string): void {
    removeDurably(join(this.studyDir(studyId), name));
  }

  /** A file in the state directory itself (noise.secret, status.json, agent.lock). */
  file(name: string): string {
    return join(this.dir, name);
  }

  // A pending result: the body to upload plus the state to commit once the coordinator has it.
  private get pendingDir(): string {
    return ensureDir(join(this.dir, 'pending'));
  }

  savePending(p: PendingResult): void {
    const d = this.pendingDir;
    writeAtomic(join(d, `${safe(p.taskId)}.body`), p.body);
    writeAtomic(join(d, `${safe(p.taskId)}.json`), JSON.stringify(metaOf(p)));
  }

  /**
   * Queues a result whose body is already a complete, fsynced file (release-file.ts): hard-linked in, not copied
   * (the same inode as its kept release), then its metadata written, so pending() never sees half of it.
   */
  savePendingFile(p: Omit<PendingResult, 'body'>, bodyFile: string): void {
    const d = this.pendingDir;
    const target = join(d, `${safe(p.taskId)}.body`);
    const tmp = `${target}.${randomBytes(4).toString('hex')}.tmp`;
    linkSync(bodyFile, tmp);
    renameSync(tmp, target);
    fsyncDir(d);
    writeAtomic(join(d, `${safe(p.taskId)}.json`), JSON.stringify(metaOf(p)));
  }

  /** Rewrites only a pending result's metadata (its usage was acknowledged, say); the body is unchanged. */
  savePendingMeta(p: Omit<PendingResult, 'body'>): void {
    writeAtomic(join(this.pendingDir, `${safe(p.taskId)}.json`), JSON.stringify(metaOf(p)));
  }

  /** How many results wait to be sent (without reading their bodies). */
  pendingCount(): number {
    return readdirSync(this.pendingDir).filter((f) => f.endsWith('.json')).length;
  }

  /** The queued results, with their bodies' files and sizes, not their bytes (a body may be a 1 GB model). */
  pending(): QueuedResult[] {
    const d = this.pendingDir;
    const out: QueuedResult[] = [];
    for (const f of readdirSorted(d)) {
      if (!f.endsWith('.json')) continue;
      const meta = JSON.parse(readFileSync(join(d, f), 'utf8')) as Omit<PendingResult, 'body'>;
      const bodyFile = join(d, f.replace(/\.json$/, '.body'));
      if (!existsSync(bodyFile)) continue;
      out.push({ ...meta, bodyFile, size: statSync(bodyFile).size });
    }
    return out;
  }

  /** A queued result's body, read whole: for the small ones and SecAgg+'s (bounded by its model limit). */
  pendingBody(q: QueuedResult): Uint8Array {
    return new Uint8Array(readFileSync(q.bodyFile));
  }

  /** The file a pending result's body is kept in (a large update is uploaded in chunks from it: upload.ts). */
  pendingBodyFile(taskId: string): string {
    return join(this.pendingDir, `${safe(taskId)}.body`);
  }

  /** Where a model being downloaded is kept until it is whole and verified (a download resumes from it). */
  modelFile(versionId: string): string {
    return join(ensureDir(join(this.dir, 'models')), `${safe(versionId)}.safetensors`);
  }

  clearPending(taskId: string): void {
    // The metadata first: a body without its .json is ignored by pending(), never half-sent.
    removeDurably(join(this.pendingDir, `${safe(taskId)}.json`));
    removeDurably(join(this.pendingDir, `${safe(taskId)}.body`));
  }
}

export interface PendingResult {
  taskId: string;
  studyId: string;
  contentType: 'application/octet-stream' | 'application/json';
  body: Uint8Array;
  /** Files to write into the study's state once the upload is acknowledged. */
  commit: { name: string; data: string; encoding: 'utf8' | 'base64' }[];
  /**
   * The task's compute usage, not yet acknowledged by the coordinator: sent before the result (the coordinator
   * dedupes by task id), so an agent killed after queuing its result still reports it after a restart.
   */
  usage?: UsageReport;
}

/** A queued result as pending() lists it: its metadata, and where its body is. */
export type QueuedResult = Omit<PendingResult, 'body'> & { bodyFile: string; size: number };

/** What a pending result's .json holds: everything but the body (and a QueuedResult's file and size). */
function metaOf(p: Omit<PendingResult, 'body'> & { body?: unknown; bodyFile?: unknown; size?: unknown }): Omit<PendingResult, 'body'> {
  const { body: _b, bodyFile: _f, size: _s, ...meta } = p;
  return meta;
}

function readdirSorted(d: string): string[] {
  return readdirSync(d).sort();
}
