/**
 * The file blob store (the default next to SQLite): `<root>/sha256/ab/<digest>` per blob, uploads in progress as
 * `<root>/partial/<id>` (their size is what was received, so they survive a restart), whole-blob writes through
 * `<root>/tmp/`. Every blob is written to a temporary file, fsynced, renamed into place and its directory fsynced,
 * so a crash leaves either no blob or the whole one, never a torn file under a digest's name. Directories are 700,
 * files 600, as the store's database files are.
 */
import { createHash, randomBytes, type Hash } from 'node:crypto';
import { mkdirSync, existsSync, readdirSync, chmodSync } from 'node:fs';
import { open, rename, unlink, stat, readdir, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { BlobOffsetConflict, DEFAULT_BLOB_CHUNK_BYTES, type BlobInfo, type BlobReader, type BlobStore, type PartialBlob } from './blob-store.js';
import { checkExpect } from './memory-blobs.js';
import { blobPath, checkDigest, checkPartialId } from './names.js';

const DIR_MODE = 0o700;
/**
 * Appends to one partial file run one at a time in this process, whichever store object they come through (a
 * retried chunk racing the first must see its result). One coordinator per blob directory: a shared one is
 * PostgreSQL's job (pg-blobs.ts).
 */
const partialLocks = new Map<string, Promise<unknown>>();
/**
 * The sha256 of each partial's bytes so far, kept across appends, so a commit need not read the upload back to
 * hash it. Valid only while its `size` is the file's (a state that fell behind — a failed write, another process —
 * is rebuilt by hashing the file once); a hash state cannot be saved, so after a restart the first append re-hashes
 * what the partial holds, once.
 */
const partialHashes = new Map<string, { hash: Hash; size: number }>();
const FILE_MODE = 0o600;

export class FileBlobStore implements BlobStore {
  readonly kind = 'files' as const;

  constructor(readonly root: string) {
    for (const d of [root, join(root, 'sha256'), join(root, 'partial'), join(root, 'tmp')]) {
      if (!existsSync(d)) mkdirSync(d, { recursive: true, mode: DIR_MODE });
      chmodSync(d, DIR_MODE);
    }
    // A crash between a temporary file's creation and its rename leaves it behind: it is no blob, drop it.
    for (const f of readdirSync(join(root, 'tmp'))) void unlink(join(root, 'tmp', f)).catch(() => {});
  }

  private path(digest: string): string {
    return join(this.root, blobPath(checkDigest(digest)));
  }

  async put(bytes: Uint8Array): Promise<BlobInfo> {
    return this.putStream([bytes]);
  }

  async putStream(chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, expect: Partial<BlobInfo> = {}): Promise<BlobInfo> {
    const tmp = join(this.root, 'tmp', randomBytes(12).toString('hex'));
    const fh = await open(tmp, 'wx', FILE_MODE);
    const hash = createHash('sha256');
    let size = 0;
    try {
      for await (const c of chunks) {
        hash.update(c);
        await writeAll(fh, c, size);
        size += c.length;
      }
      await fh.sync();
    } catch (e) {
      await fh.close();
      await unlink(tmp).catch(() => {});
      throw e;
    }
    await fh.close();
    const info = { digest: hash.digest('hex'), size };
    try {
      checkExpect(info, expect);
      await this.install(tmp, info.digest);
    } catch (e) {
      await unlink(tmp).catch(() => {});
      throw e;
    }
    return info;
  }

  /** Moves a complete, fsynced file under its digest's name (or drops it when that blob is already there). */
  private async install(file: string, digest: string): Promise<void> {
    const target = this.path(digest);
    if (existsSync(target)) {
      await unlink(file);
      return;
    }
    const dir = join(this.root, 'sha256', digest.slice(0, 2));
    if (!existsSync(dir)) {
      mkdirSync(dir, { mode: DIR_MODE });
      await syncDir(join(this.root, 'sha256'));
    }
    await rename(file, target);
    await syncDir(dir);
  }

  async size(digest: string): Promise<number | undefined> {
    try {
      return (await stat(this.path(digest))).size;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  async read(digest: string, start: number, end: number): Promise<Uint8Array> {
    const fh = await this.openBlob(digest);
    try {
      const size = (await fh.stat()).size;
      const to = Math.min(end, size);
      if (to <= start) return new Uint8Array(0);
      return await readRange(fh, start, to);
    } finally {
      await fh.close();
    }
  }

  async *stream(digest: string, opts: { start?: number; end?: number; chunkBytes?: number } = {}): AsyncIterable<Uint8Array> {
    const fh = await this.openBlob(digest);
    try {
      const end = Math.min(opts.end ?? Infinity, (await fh.stat()).size);
      const step = opts.chunkBytes ?? DEFAULT_BLOB_CHUNK_BYTES;
      for (let at = opts.start ?? 0; at < end; at += step) yield await readRange(fh, at, Math.min(at + step, end));
    } finally {
      await fh.close();
    }
  }

  async openReader(digest: string): Promise<BlobReader> {
    const fh = await this.openBlob(digest);
    const size = (await fh.stat()).size;
    return {
      size,
      readInto: async (target, position) => {
        if (position < 0 || position + target.length > size) throw new Error(`blob ${digest}: bytes [${position}, ${position + target.length}) lie outside its ${size} bytes`);
        await readFully(fh, target, position);
      },
      close: () => fh.close(),
    };
  }

  async readAll(digest: string): Promise<Uint8Array> {
    return this.read(digest, 0, Infinity);
  }

  async delete(digest: string): Promise<void> {
    await unlink(this.path(digest)).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw e;
    });
  }

  async list(): Promise<BlobInfo[]> {
    const out: BlobInfo[] = [];
    for (const d of await readdir(join(this.root, 'sha256'))) {
      for (const f of await readdir(join(this.root, 'sha256', d))) out.push({ digest: f, size: (await stat(join(this.root, 'sha256', d, f))).size });
    }
    return out.sort((a, b) => (a.digest < b.digest ? -1 : 1));
  }

  async partial(id: string): Promise<PartialBlob> {
    const file = join(this.root, 'partial', checkPartialId(id));
    if (!existsSync(file)) {
      await (await open(file, 'a', FILE_MODE)).close();
      await syncDir(join(this.root, 'partial'));
    }
    const received = async () => (await stat(file)).size;
    const serial = <T>(f: () => Promise<T>): Promise<T> => {
      const prev = partialLocks.get(file) ?? Promise.resolve();
      const next = prev.catch(() => {}).then(f);
      partialLocks.set(file, next);
      void next.catch(() => {}).then(() => {
        if (partialLocks.get(file) === next) partialLocks.delete(file);
      });
      return next;
    };
    return {
      id,
      received,
      append: (offset, bytes) => serial(async () => {
        const have = await received();
        if (offset !== have) throw new BlobOffsetConflict(have);
        const fh = await open(file, 'r+');
        try {
          const state = await hashState(fh, have);
          await writeAll(fh, bytes, have);
          await fh.sync(); // "received" means durable: a coordinator restarted after this answer still holds it
          state.hash.update(bytes);
          state.size += bytes.length;
        } finally {
          await fh.close();
        }
        return have + bytes.length;
      }),
      commit: (expect) => serial(async () => {
        const fh = await open(file, 'r');
        let info: BlobInfo;
        try {
          const state = await hashState(fh, (await fh.stat()).size);
          info = { digest: state.hash.digest('hex'), size: state.size };
        } finally {
          partialHashes.delete(file);
          await fh.close();
        }
        try {
          checkExpect(info, expect);
        } catch (e) {
          await unlink(file).catch(() => {});
          throw e;
        }
        await this.install(file, info.digest);
        return info;
      }),
      discard: () => serial(async () => {
        partialHashes.delete(file);
        await unlink(file).catch(() => {});
      }),
    };
    /** The running hash of the partial's first `size` bytes (its whole content): kept, or rebuilt from the file. */
    async function hashState(fh: FileHandle, size: number): Promise<{ hash: Hash; size: number }> {
      const kept = partialHashes.get(file);
      if (kept && kept.size === size) return kept;
      const state = { hash: createHash('sha256'), size: 0 };
      partialHashes.delete(file);
      for (let at = 0; at < size; at += DEFAULT_BLOB_CHUNK_BYTES) {
        const c = await readRange(fh, at, Math.min(at + DEFAULT_BLOB_CHUNK_BYTES, size));
        state.hash.update(c);
        state.size += c.length;
      }
      partialHashes.set(file, state);
      return state;
    }
  }

  private async openBlob(digest: string): Promise<FileHandle> {
    try {
      return await open(this.path(digest), 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new Error(`no blob ${digest}`);
      throw e;
    }
  }
}

async function writeAll(fh: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  for (let done = 0; done < bytes.length;) {
    const { bytesWritten } = await fh.write(bytes, done, bytes.length - done, position + done);
    done += bytesWritten;
  }
}

async function readRange(fh: FileHandle, start: number, end: number): Promise<Uint8Array> {
  const out = Buffer.allocUnsafe(end - start);
  await readFully(fh, out, start);
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

async function readFully(fh: FileHandle, out: Uint8Array, start: number): Promise<void> {
  for (let done = 0; done < out.length;) {
    const { bytesRead } = await fh.read(out, done, out.length - done, start + done);
    if (bytesRead === 0) throw new Error(`blob file ended at ${start + done}, expected ${start + out.length} bytes`);
    done += bytesRead;
  }
}

/** fsync on a directory makes a rename or a new entry in it durable. */
async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
