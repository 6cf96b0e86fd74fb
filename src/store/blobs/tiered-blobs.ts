/**
 * The SQLite store's blob store: small blobs (at most SMALL_BLOB_BYTES, blob-store.ts) as rows of a table in the
 * SQLite database itself, larger ones as files (file-blobs.ts) exactly as before. A tiny model's update (a few
 * hundred bytes) then costs one INSERT instead of a temporary file, two fsyncs, a rename and a close: at 1,000
 * live sites the file writes were 14% of the coordinator's time (`setu bench live --sites 1000 --cpu-prof`).
 *
 *   small_blobs   digest (pk), size, bytes        (migration 0011_small_blobs, SQLite only)
 *
 * Content-addressed like the files (the digest is the bytes' sha256 in lowercase hex), written with
 * `INSERT … ON CONFLICT DO NOTHING`. The tier is bound to a connection or transaction handle, as PgBlobStore is:
 * a put through a transaction's `tx.blobs` is part of that transaction (rolled back with it), and is as durable
 * as the rows that name it (WAL, synchronous=NORMAL: a process crash loses nothing committed).
 *
 * Reads look in the table first, then in the files: blobs written before this tier existed (and those migration
 * 0009 moved out of the rows) stay files and are found there; nothing moves them. Uploads in progress
 * (`partial`) are files, and a committed upload stays a file whatever its size. `list()` is both tiers' union.
 */
import { createHash } from 'node:crypto';
import type { Kysely, Migration, Transaction } from 'kysely';
import { DEFAULT_BLOB_CHUNK_BYTES, SMALL_BLOB_BYTES, type BlobInfo, type BlobReader, type BlobStore, type PartialBlob } from './blob-store.js';
import type { FileBlobStore } from './file-blobs.js';
import { checkExpect } from './memory-blobs.js';
import { checkDigest } from './names.js';

export interface SmallBlobTables {
  small_blobs: { digest: string; size: number; bytes: Uint8Array };
}
type Db = Kysely<SmallBlobTables> | Transaction<SmallBlobTables>;

/**
 * 0011_small_blobs: the table of the SQLite store's small blobs. PostgreSQL gets nothing: its own blob store
 * (pg-blobs.ts) already keeps a small blob as one row, and with `blobDir` there the blobs stay files (the tier is
 * SQLite's). Blob files written before this migration are not moved (reads fall back to the files).
 */
export function smallBlobsMigration(dialect: 'sqlite' | 'postgres'): Migration {
  return {
    async up(db: Kysely<any>) {
      if (dialect !== 'sqlite') return;
      await db.schema.createTable('small_blobs')
        .addColumn('digest', 'text', (c) => c.primaryKey())
        .addColumn('size', 'integer', (c) => c.notNull())
        .addColumn('bytes', 'blob', (c) => c.notNull())
        .execute();
    },
  };
}

/** libsql hands a blob back as a Buffer (or an ArrayBuffer); the rest of Setu sees Uint8Array. */
function asBytes(v: unknown): Uint8Array {
  if (v instanceof Uint8Array) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  throw new Error(`expected a blob, got ${typeof v}`);
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

export class TieredBlobStore implements BlobStore {
  readonly kind = 'tiered' as const;
  private readonly db: Db;

  /**
   * `db`: the store's connection or a transaction of it; `files`: where larger blobs and uploads go (shared by every
   * handle's tier); `guard`: called before each statement (the store's refusal of a call on it from inside its own
   * transaction, which on SQLite's one connection would wait for that transaction forever).
   */
  constructor(db: unknown, readonly files: FileBlobStore, readonly limit = SMALL_BLOB_BYTES, private readonly guard: () => void = () => {}) {
    this.db = db as Db;
  }

  private on(): Db {
    this.guard();
    return this.db;
  }

  async put(bytes: Uint8Array): Promise<BlobInfo> {
    if (bytes.length > this.limit) return this.files.put(bytes);
    return this.putRow(bytes, {});
  }

  private async putRow(bytes: Uint8Array, expect: Partial<BlobInfo>): Promise<BlobInfo> {
    const info = { digest: sha256(bytes), size: bytes.length };
    checkExpect(info, expect);
    await this.on().insertInto('small_blobs').values({ digest: info.digest, size: info.size, bytes })
      .onConflict((oc) => oc.column('digest').doNothing()).execute();
    return info;
  }

  /**
   * Gathers the stream up to the limit (copies: a caller may reuse its buffer once a chunk is taken): ended within
   * it, the blob is a row; one chunk more and what was gathered goes to the files first, the rest streamed after it,
   * never all held. A size announced past the limit goes to the files at once.
   */
  async putStream(chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, expect: Partial<BlobInfo> = {}): Promise<BlobInfo> {
    if (expect.size !== undefined && expect.size > this.limit) return this.files.putStream(chunks, expect);
    const it = (Symbol.asyncIterator in chunks ? chunks[Symbol.asyncIterator]() : chunks[Symbol.iterator]()) as AsyncIterator<Uint8Array> | Iterator<Uint8Array>;
    const head: Uint8Array[] = [];
    let held = 0;
    for (;;) {
      const next = await it.next();
      if (next.done) return this.putRow(head.length === 1 ? head[0]! : new Uint8Array(Buffer.concat(head, held)), expect);
      if (held + next.value.length > this.limit) return this.files.putStream(spill(head, next.value, it), expect);
      head.push(new Uint8Array(next.value));
      held += next.value.length;
    }
  }

  /** The row's bytes, undefined when the blob is not a row (it may be a file). */
  private async row(digest: string): Promise<Uint8Array | undefined> {
    const r = await this.on().selectFrom('small_blobs').select('bytes').where('digest', '=', checkDigest(digest)).executeTakeFirst();
    return r && asBytes(r.bytes);
  }

  async size(digest: string): Promise<number | undefined> {
    const r = await this.on().selectFrom('small_blobs').select('size').where('digest', '=', checkDigest(digest)).executeTakeFirst();
    return r ? Number(r.size) : this.files.size(digest);
  }

  async read(digest: string, start: number, end: number): Promise<Uint8Array> {
    const b = await this.row(digest);
    if (!b) return this.files.read(digest, start, end);
    return b.subarray(start, Math.max(start, Math.min(end, b.length)));
  }

  async *stream(digest: string, opts: { start?: number; end?: number; chunkBytes?: number } = {}): AsyncIterable<Uint8Array> {
    const b = await this.row(digest);
    if (!b) {
      yield* this.files.stream(digest, opts);
      return;
    }
    const end = Math.min(opts.end ?? b.length, b.length);
    const step = opts.chunkBytes ?? DEFAULT_BLOB_CHUNK_BYTES;
    for (let at = opts.start ?? 0; at < end; at += step) yield b.subarray(at, Math.min(at + step, end));
  }

  async openReader(digest: string): Promise<BlobReader> {
    const b = await this.row(digest);
    if (!b) return this.files.openReader(digest);
    return {
      size: b.length,
      readInto: async (target, position) => {
        if (position < 0 || position + target.length > b.length) throw new Error(`blob ${digest}: bytes [${position}, ${position + target.length}) lie outside its ${b.length} bytes`);
        target.set(b.subarray(position, position + target.length));
      },
      close: async () => {},
    };
  }

  async readAll(digest: string): Promise<Uint8Array> {
    return (await this.row(digest)) ?? this.files.readAll(digest);
  }

  async delete(digest: string): Promise<void> {
    await this.on().deleteFrom('small_blobs').where('digest', '=', checkDigest(digest)).execute();
    await this.files.delete(digest);
  }

  async list(): Promise<BlobInfo[]> {
    const out = new Map<string, BlobInfo>();
    for (const f of await this.files.list()) out.set(f.digest, f);
    for (const r of await this.on().selectFrom('small_blobs').select(['digest', 'size']).execute()) out.set(r.digest, { digest: r.digest, size: Number(r.size) });
    return [...out.values()].sort((a, b) => (a.digest < b.digest ? -1 : 1));
  }

  /** Uploads are files (their chunks are appended and survive a restart); a committed one stays a file. */
  partial(id: string): Promise<PartialBlob> {
    return this.files.partial(id);
  }
}

/** What was gathered, the chunk that passed the limit, then the rest of the stream (closed if the consumer stops). */
async function* spill(head: Uint8Array[], next: Uint8Array, it: AsyncIterator<Uint8Array> | Iterator<Uint8Array>): AsyncIterable<Uint8Array> {
  let done = false;
  try {
    yield* head;
    yield next;
    for (let r = await it.next(); !r.done; r = await it.next()) yield r.value;
    done = true;
  } finally {
    if (!done) await it.return?.();
  }
}
