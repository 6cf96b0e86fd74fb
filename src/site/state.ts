/**
 * What a site agent keeps on its own disk: its identity (site.key, the Ed25519 private key it made at
 * enrolment, mode 600, never sent anywhere; credential.json, its site id and name), per-study training state (batch-stream
 * position, client-side strategy state) and a result waiting to be uploaded. Every write is atomic
 * (temp file + rename), so a crash never leaves half a file, and a result is saved before it is sent,
 * so a coordinator outage or an agent crash loses nothing.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

/** Who this site is at the coordinator. Its requests are signed with site.key under key id = siteId. */
export interface Credential {
  coordinator: string;
  siteId: string;
  siteName: string;
}

export function writeAtomic(file: string, data: string | Uint8Array, mode = 0o600): void {
  const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(tmp, data, { mode });
  renameSync(tmp, file);
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

  private studyDir(studyId: string): string {
    const d = join(this.dir, 'studies', safe(studyId));
    mkdirSync(d, { recursive: true });
    return d;
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
    rmSync(join(this.studyDir(studyId), name), { force: true });
  }

  // A pending result: the body to upload plus the state to commit once the coordinator has it.
  private get pendingDir(): string {
    const d = join(this.dir, 'pending');
    mkdirSync(d, { recursive: true });
    return d;
  }

  savePending(p: PendingResult): void {
    const d = this.pendingDir;
    writeAtomic(join(d, `${safe(p.taskId)}.body`), p.body);
    writeAtomic(join(d, `${safe(p.taskId)}.json`), JSON.stringify({ ...p, body: undefined }));
  }

  pending(): PendingResult[] {
    const d = this.pendingDir;
    const out: PendingResult[] = [];
    for (const f of readdirSorted(d)) {
      if (!f.endsWith('.json')) continue;
      const meta = JSON.parse(readFileSync(join(d, f), 'utf8')) as Omit<PendingResult, 'body'>;
      const bodyFile = join(d, f.replace(/\.json$/, '.body'));
      if (!existsSync(bodyFile)) continue;
      out.push({ ...meta, body: new Uint8Array(readFileSync(bodyFile)) });
    }
    return out;
  }

  clearPending(taskId: string): void {
    rmSync(join(this.pendingDir, `${safe(taskId)}.json`), { force: true });
    rmSync(join(this.pendingDir, `${safe(taskId)}.body`), { force: true });
  }
}

export interface PendingResult {
  taskId: string;
  studyId: string;
  contentType: 'application/octet-stream' | 'application/json';
  body: Uint8Array;
  /** Files to write into the study's state once the upload is acknowledged. */
  commit: { name: string; data: string; encoding: 'utf8' | 'base64' }[];
}

function readdirSorted(d: string): string[] {
  return readdirSync(d).sort();
}
