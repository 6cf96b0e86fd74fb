/**
 * The file blob store (the default next to SQLite): `<root>/sha256/ab/<digest>` per blob, uploads in progress as
 * `<root>/partial/<id>` with a journal of their acknowledged chunks' digests beside it (`<id>.chunks`; a restart keeps
 * the chunks the file holds intact, see partialState: an upload is fsynced once, at commit), whole-blob writes through
 * `<root>/tmp/`. Every blob is written to a temporary file, fsynced, renamed into place and its directory fsynced,
 * so a crash leaves either no blob or the whole one, never a torn file under a digest's name. Directories are 700,
 * files 600, as the store's database files are.
 */
import { createHash, randomBytes, type Hash } from 'node:crypto';
import { mkdirSync, existsSync, readdirSync, chmodSync } from 'node:fs';
import { appendFile, open, readFile, rename, unlink, stat, readdir, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { BlobChunkMismatch, BlobChunkTooLarge, BlobOffsetConflict, DEFAULT_BLOB_CHUNK_BYTES, type BlobInfo, type BlobReader, type BlobStore, type ChunkCheck, type PartialBlob } from './blob-store.js';
import { checkExpect } from './memory-blobs.js';
import { blobPath, checkDigest, checkPartialId } from './names.js';

const DIR_MODE = 0o700;
/**
 * Appends to one partial file run one at a time in this process, whichever store object they come through (a
 * retried chunk racing the first must see its result). One coordinator per blob directory: a shared one is
 * PostgreSQL's job (pg-blobs.ts).
 */
const partialLocks = new Map<string, Promise<unknown>>();
/** An upload's journal of acknowledged chunks, beside it: `<root>/partial/<id>.chunks` (no upload id holds a dot). */
const JOURNAL = '.chunks';
/** A streamed chunk's bytes are written in batches of about this size (fewer, larger writes). */
const WRITE_BATCH_BYTES = 1024 * 1024;
const FILE_MODE = 0o600;

export class FileBlobStore implements BlobStore {
  readonly kind = 'files' as const;
  /**
   * The sha256 state and size of each partial this store wrote, so neither an append nor a commit reads the upload
   * back to hash it. A new store object (a restarted coordinator) rebuilds it once from the file (partialState).
   */
  private readonly partials = new Map<string, { hash: Hash; size: number }>();

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
    const journal = `${file}${JOURNAL}`;
    if (!existsSync(file)) {
      await (await open(journal, 'w', FILE_MODE)).close();
      await (await open(file, 'a', FILE_MODE)).close();
      await syncDir(join(this.root, 'partial'));
      this.partials.set(file, { hash: createHash('sha256'), size: 0 });
    }
    const serial = <T>(f: () => Promise<T>): Promise<T> => {
      const prev = partialLocks.get(file) ?? Promise.resolve();
      const next = prev.catch(() => {}).then(f);
      partialLocks.set(file, next);
      void next.catch(() => {}).then(() => {
        if (partialLocks.get(file) === next) partialLocks.delete(file);
      });
      return next;
    };
    const state = () => this.partialState(file, journal);
    const write = (offset: number, source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, check?: ChunkCheck) => serial(async () => {
      const st = await state();
      if (offset !== st.size) throw new BlobOffsetConflict(st.size);
      const fh = await open(file, 'r+');
      // The running hash goes on in a copy: a refused chunk leaves the upload's state as it was.
      const running = st.hash.copy();
      const chunk = createHash('sha256');
      let at = st.size;
      try {
        // The request's socket chunks (tens of KiB) are gathered by reference and written together: no copy, few writes.
        let batch: Uint8Array[] = [];
        let batched = 0;
        const flush = async () => {
          if (batched === 0) return;
          await writevAll(fh, batch, at);
          at += batched;
          batch = [];
          batched = 0;
        };
        for await (const c of source) {
          if (check && at + batched + c.length - st.size > check.maxBytes) throw new BlobChunkTooLarge(check.maxBytes);
          running.update(c);
          chunk.update(c);
          batch.push(c);
          batched += c.length;
          if (batched >= WRITE_BATCH_BYTES) await flush();
        }
        await flush();
        const digest = chunk.digest('hex');
        if (check && digest !== check.sha256) throw new BlobChunkMismatch(digest, check.sha256, at - st.size);
        // Not fsynced (commit is): after a crash, received() keeps only the chunks the file still holds intact.
        await appendFile(journal, `${at} ${digest}\n`);
      } catch (e) {
        await fh.truncate(st.size).catch(() => {}); // nothing of a refused or broken chunk stays
        throw e;
      } finally {
        await fh.close();
      }
      st.hash = running;
      st.size = at;
      return at;
    });
    return {
      id,
      // Behind any append in flight: its bytes are in the file, not yet in the state, and must not be taken for a crash's.
      received: () => serial(async () => (await state()).size),
      append: (offset, bytes) => write(offset, [bytes]),
      appendFrom: (offset, source, check) => write(offset, source, check),
      commit: (expect) => serial(async () => {
        let info: BlobInfo;
        try {
          const st = await state();
          info = { digest: st.hash.digest('hex'), size: st.size };
        } finally {
          this.partials.delete(file);
        }
        try {
          checkExpect(info, expect);
        } catch (e) {
          await unlink(file).catch(() => {});
          await unlink(journal).catch(() => {});
          throw e;
        }
        // The one fsync of an upload's bytes: the blob is durable before its name is (install fsyncs the directory).
        const fh = await open(file, 'r');
        try {
          await fh.sync();
        } finally {
          await fh.close();
        }
        await this.install(file, info.digest);
        await unlink(journal).catch(() => {});
        return info;
      }),
      discard: () => serial(async () => {
        this.partials.delete(file);
        await unlink(file).catch(() => {});
        await unlink(journal).catch(() => {});
      }),
    };
  }

  /**
   * The running hash and size of a partial: kept between appends while the file's size is what this store left it at;
   * otherwise (a restart, another store object on the same directory) rebuilt from the file. The rebuild checks the
   * file against its journal (one line `<end offset> <sha256>` per acknowledged chunk, written after the chunk's bytes,
   * neither fsynced before commit) and truncates it to the longest prefix of whole chunks that match: bytes a crash
   * tore or never wrote are dropped, and received() tells the agent to send them again. A partial without a journal
   * (written by an older coordinator, which fsynced every chunk) is taken as it is.
   */
  private async partialState(file: string, journal: string): Promise<{ hash: Hash; size: number }> {
    const size = (await stat(file)).size;
    const kept = this.partials.get(file);
    if (kept && kept.size === size) return kept;
    this.partials.delete(file);
    const st = { hash: createHash('sha256'), size: 0 };
    const fh = await open(file, 'r+');
    try {
      let ends: { end: number; digest: string }[];
      try {
        ends = (await readFile(journal, 'utf8')).split('\n').flatMap((l) => {
          const m = /^(\d+) ([0-9a-f]{64})$/.exec(l);
          return m ? [{ end: Number(m[1]), digest: m[2]! }] : [];
        });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
        ends = [{ end: size, digest: '' }];
      }
      for (const { end, digest } of ends) {
        if (end <= st.size || end > size) break;
        const running = st.hash.copy();
        const chunk = createHash('sha256');
        for (let at = st.size; at < end; at += DEFAULT_BLOB_CHUNK_BYTES) {
          const c = await readRange(fh, at, Math.min(at + DEFAULT_BLOB_CHUNK_BYTES, end));
          running.update(c);
          chunk.update(c);
        }
        if (digest && chunk.digest('hex') !== digest) break;
        st.hash = running;
        st.size = end;
      }
      if (st.size !== size) {
        await fh.truncate(st.size);
        await fh.sync();
      }
    } finally {
      await fh.close();
    }
    this.partials.set(file, st);
    return st;
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

/** Writes `parts` one after another from `position` (writev, resumed after a short write). */
async function writevAll(fh: FileHandle, parts: Uint8Array[], position: number): Promise<void> {
  let left = parts;
  while (left.length) {
    const { bytesWritten } = await fh.writev(left, position);
    position += bytesWritten;
    let skip = bytesWritten;
    const rest: Uint8Array[] = [];
    for (const p of left) {
      if (skip >= p.length) skip -= p.length;
      else {
        rest.push(skip ? p.subarray(skip) : p);
        skip = 0;
      }
    }
    left = rest;
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
