/**
 * The content-addressed blob store: model versions and updates live here, named by the sha256 (hex) of their
 * bytes, instead of inside SQL rows. Rows keep only the digest (and size), so a row read never carries a model.
 *
 * Implementations: files under the data directory (the default, next to SQLite; written with fsync, named by
 * digest), a chunk table in PostgreSQL (shared by several coordinators on one database), and in memory (tests,
 * simulations). All pass one suite.
 *
 * Uploads arrive in chunks (`Partial`): appended at the offset the store already holds, so a dropped
 * connection resumes where it stopped, and committed only once the whole blob's digest is verified. A chunk may be
 * appended from a stream (`appendFrom`, the upload route's request body): hashed once on its way in and kept only
 * when it matches the digest its sender signed.
 */
import { createHash } from 'node:crypto';

export interface BlobInfo {
  /** sha256 of the bytes, lowercase hex. */
  digest: string;
  size: number;
}

/** A digest or size that does not match what was promised; nothing was stored. */
export class BlobMismatch extends Error {
  override name = 'BlobMismatch';
}

/** An append at an offset other than the bytes received so far (the caller resumes from `received`). */
export class BlobOffsetConflict extends Error {
  override name = 'BlobOffsetConflict';
  constructor(readonly received: number) {
    super(`this upload holds ${received} bytes; send the next chunk at offset ${received}`);
  }
}

/** A streamed chunk whose bytes do not hash to the digest its sender declared: nothing of it was kept. */
export class BlobChunkMismatch extends Error {
  override name = 'BlobChunkMismatch';
  constructor(readonly actual: string, readonly declared: string, readonly bytes: number) {
    super(`the chunk received (${bytes} bytes) hashes to sha256 ${actual}, not the declared ${declared}; nothing of it was kept`);
  }
}

/** A streamed chunk longer than it may be (the route's chunk limit, or past the announced size): nothing of it was kept. */
export class BlobChunkTooLarge extends Error {
  override name = 'BlobChunkTooLarge';
  constructor(readonly maxBytes: number) {
    super(`the chunk runs past the ${maxBytes} bytes it may hold here; nothing of it was kept`);
  }
}

/** What a streamed chunk must be: at most `maxBytes`, hashing to `sha256` (hex). */
export interface ChunkCheck {
  sha256: string;
  maxBytes: number;
}

/** An upload in progress, by id (kept across coordinator restarts by the file and PostgreSQL backends). */
export interface PartialBlob {
  readonly id: string;
  /**
   * Bytes received so far. After a crash, what survived it: the file backend checks what it holds against the digest
   * of each chunk it acknowledged and keeps the longest intact prefix, so an agent told this offset resumes from it.
   */
  received(): Promise<number>;
  /**
   * Appends `bytes` at `offset` (must equal received(): BlobOffsetConflict otherwise); returns the new received count.
   * `bytes` is not kept once this resolves (the caller reuses its buffer).
   */
  append(offset: number, bytes: Uint8Array): Promise<number>;
  /**
   * Appends the bytes of `source` at `offset` (BlobOffsetConflict, before reading any, unless it equals received()),
   * hashing them once on the way; keeps them only when they hash to `check.sha256` (BlobChunkMismatch) and stay
   * within `check.maxBytes` (BlobChunkTooLarge). Anything refused, or a source that fails part-way, leaves the
   * upload's bytes as they were. Returns the new received count.
   */
  appendFrom(offset: number, source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, check: ChunkCheck): Promise<number>;
  /** Verifies the whole content against `expect` and makes it a blob (BlobMismatch and the partial is discarded otherwise). */
  commit(expect: BlobInfo): Promise<BlobInfo>;
  discard(): Promise<void>;
}

/** One blob held open for many reads into the caller's buffers (a streaming aggregation's slices). */
export interface BlobReader {
  readonly size: number;
  /** Fills `target` with the blob's bytes from `position` (all of it: the range must lie inside the blob). */
  readInto(target: Uint8Array, position: number): Promise<void>;
  close(): Promise<void>;
}

export interface BlobStore {
  readonly kind: 'memory' | 'files' | 'postgres' | 'tiered';
  /** Stores bytes (idempotent: the same bytes are stored once). */
  put(bytes: Uint8Array): Promise<BlobInfo>;
  /** Stores a stream of chunks, hashing while writing; `expect` is verified before the blob becomes visible. */
  putStream(chunks: AsyncIterable<Uint8Array>, expect?: Partial<BlobInfo>): Promise<BlobInfo>;
  /** Size of a stored blob, undefined when absent. */
  size(digest: string): Promise<number | undefined>;
  /** Bytes [start, end) of a blob (end clamped to its size). */
  read(digest: string, start: number, end: number): Promise<Uint8Array>;
  /** The blob's bytes [start, end) as chunks of at most `chunkBytes` (default 4 MiB), in order. */
  stream(digest: string, opts?: { start?: number; end?: number; chunkBytes?: number }): AsyncIterable<Uint8Array>;
  /** The blob opened once for reads into given buffers (no allocation, no open per read); where a backend has one. */
  openReader?(digest: string): Promise<BlobReader>;
  /** The whole blob (only for blobs known to be small: metadata-sized models, tests). */
  readAll(digest: string): Promise<Uint8Array>;
  delete(digest: string): Promise<void>;
  /** Every stored blob, by digest (storeDigest includes them; uploads in progress are not blobs). */
  list(): Promise<BlobInfo[]>;
  /** Opens (creating when new) the upload `id`. */
  partial(id: string): Promise<PartialBlob>;
  close?(): Promise<void>;
}

export const DEFAULT_BLOB_CHUNK_BYTES = 4 * 1024 * 1024;

/**
 * What counts as a small blob (a tiny model's version or update: a few hundred bytes to a few KiB), for the backends
 * that treat those apart: the SQLite store keeps them as rows of its own database instead of files
 * (tiered-blobs.ts), PostgreSQL's blob store remembers them once read (pg-blobs.ts).
 */
export const SMALL_BLOB_BYTES = 64 * 1024;

/**
 * `appendFrom` for backends that store a chunk in one go (memory, PostgreSQL): the chunk is gathered, checked, then
 * appended; nothing reaches the partial before its digest matched.
 */
export async function appendGathered(p: PartialBlob, offset: number, source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, check: ChunkCheck): Promise<number> {
  const have = await p.received();
  if (offset !== have) throw new BlobOffsetConflict(have);
  const parts: Uint8Array[] = [];
  const hash = createHash('sha256');
  let n = 0;
  for await (const c of source) {
    n += c.length;
    if (n > check.maxBytes) throw new BlobChunkTooLarge(check.maxBytes);
    hash.update(c);
    parts.push(c);
  }
  const actual = hash.digest('hex');
  if (actual !== check.sha256) throw new BlobChunkMismatch(actual, check.sha256, n);
  return p.append(offset, parts.length === 1 ? parts[0]! : Buffer.concat(parts, n));
}
