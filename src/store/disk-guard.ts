/**
 * SQLite on a full disk: libsql (0.5.29, the latest) aborts the whole process (a Rust panic, SIGABRT) when a
 * prepared statement fails with SQLITE_FULL, and every Kysely statement is a prepared one, so a full disk would kill
 * the coordinator instead of answering 503. The guard refuses data writes (INSERT, UPDATE, DELETE) with
 * StoreUnavailable while the disk under the database has less than a reserve free (SETU_SQLITE_MIN_FREE_MB, default
 * 16), looking at the disk at most once a second; reads, and ending a transaction, go on. Writing resumes once there
 * is room again.
 */
import { statfsSync } from 'node:fs';
import { StoreUnavailable } from './store.js';

const WRITES = new Set(['InsertQueryNode', 'UpdateQueryNode', 'DeleteQueryNode']);

export function minFreeBytes(env: NodeJS.ProcessEnv = process.env): number {
  const v = env.SETU_SQLITE_MIN_FREE_MB?.trim();
  if (!v) return 16 * 2 ** 20;
  if (!/^[0-9]{1,12}$/.test(v)) throw new Error(`SETU_SQLITE_MIN_FREE_MB must be a whole number of MiB, got "${v}"`);
  return Number(v) * 2 ** 20;
}

export class DiskGuard {
  /** Off while the store migrates (the reserve is for the coordinator's writes, not its schema). */
  armed = false;
  private checkedAt = -Infinity;
  private free = Infinity;

  constructor(private readonly dir: string, private readonly reserve: number) {}

  /** Throws StoreUnavailable for a data write while the disk is under the reserve. */
  check(queryKind: string): void {
    if (!this.armed || !WRITES.has(queryKind)) return;
    const t = Date.now();
    if (t - this.checkedAt >= 1000) {
      const s = statfsSync(this.dir);
      this.free = s.bavail * s.bsize;
      this.checkedAt = t;
    }
    if (this.free < this.reserve) {
      const mib = (n: number) => Math.floor(n / 2 ** 20);
      throw new StoreUnavailable(`the disk holding ${this.dir} has ${mib(this.free)} MiB free, under the ${mib(this.reserve)} MiB the store keeps in reserve (SETU_SQLITE_MIN_FREE_MB): writes are refused until there is room`);
    }
  }
}
