/**
 * The PostgreSQL blob store: blobs as rows of a chunk table in the coordinators' own database, so several
 * coordinators sharing one PostgreSQL share every model version and update (and any of them can continue an
 * upload another one started). Tables (migration 0009_blobs, PostgreSQL only):
 *
 *   blobs                 digest (pk), size
 *   blob_chunks           digest, start, bytes          (pk digest, start; a blob is its chunks in `start` order)
 *   blob_partials         id (pk), received
 *   blob_partial_chunks   id, start, bytes              (pk id, start)
 *
 * A blob becomes visible with its `blobs` row, written in the same transaction as its chunks, so a reader never
 * sees half of one. An append locks its partial's row, so two coordinators cannot both write at one offset.
 */
import { createHash, randomBytes } from 'node:crypto';
import { sql, type Kysely, type Transaction } from 'kysely';
import { BlobMismatch, BlobOffsetConflict, DEFAULT_BLOB_CHUNK_BYTES, SMALL_BLOB_BYTES, appendGathered, type BlobInfo, type BlobStore, type PartialBlob } from './blob-store.js';
import { checkExpect } from './memory-blobs.js';
import { checkDigest, checkPartialId } from './names.js';

export interface BlobTables {
  blobs: { digest: string; size: number };
  blob_chunks: { digest: string; start: number; bytes: Uint8Array };
  blob_partials: { id: string; received: number };
  blob_partial_chunks: { id: string; start: number; bytes: Uint8Array };
}
type Db = Kysely<BlobTables> | Transaction<BlobTables>;

/** One row of blob_chunks at most this big: a read of a range touches few rows, none of them huge. */
const ROW_BYTES = DEFAULT_BLOB_CHUNK_BYTES;

/**
 * Blobs up to SMALL_BLOB_BYTES (blob-store.ts) are remembered by this process once written or read (a tiny model's
 * update is read several times in its round: checked, counted, aggregated). A blob's bytes never change (it is named
 * by their digest), so the copy is never stale; whether the blob still exists is still asked of the database on every
 * read, so a delete by another coordinator is seen at once. This is their bytes in all, oldest dropped first.
 */
const SMALL_BLOBS_BUDGET = 32 * 1024 * 1024;

const asBytes = (v: unknown): Uint8Array => {
  if (v instanceof Uint8Array) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  throw new Error(`expected bytea, got ${typeof v}`);
};

export class PgBlobStore implements BlobStore {
  readonly kind = 'postgres' as const;
  private readonly db: Db;
  private readonly small = new Map<string, Uint8Array>();
  private smallBytes = 0;

  /** `db`: the store's own Kysely (or, in the migration that moves rows here, its transaction). */
  constructor(db: unknown) {
    this.db = db as Db;
  }

  /** Runs `fn` in a transaction, joining the one `db` already is (the migration's). */
  private tx<T>(fn: (t: Db) => Promise<T>): Promise<T> {
    return this.db.isTransaction ? fn(this.db) : (this.db as Kysely<BlobTables>).transaction().execute(fn);
  }

  async put(bytes: Uint8Array): Promise<BlobInfo> {
    return this.putStream([bytes]);
  }

  async putStream(chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, expect: Partial<BlobInfo> = {}): Promise<BlobInfo> {
    // A blob that fits one chunk row is written in one transaction from memory; a larger one goes through a partial
    // (its rows appended as they come, hashed and moved in place at the end), holding one row's bytes at a time.
    const iterator = (Symbol.asyncIterator in chunks ? chunks[Symbol.asyncIterator]() : chunks[Symbol.iterator]()) as AsyncIterator<Uint8Array> | Iterator<Uint8Array>;
    const head: Uint8Array[] = [];
    let headBytes = 0;
    for (;;) {
      const next = await iterator.next();
      if (next.done) return this.putSmall(head.length === 1 ? head[0]! : new Uint8Array(Buffer.concat(head)), expect);
      head.push(next.value);
      headBytes += next.value.length;
      if (headBytes > ROW_BYTES) break;
    }
    const p = await this.partial(`put-${randomBytes(12).toString('hex')}`);
    try {
      let at = 0;
      for (const c of head) at = await p.append(at, c);
      for (let next = await iterator.next(); !next.done; next = await iterator.next()) at = await p.append(at, next.value);
      return await this.commitPartial(p.id, expect);
    } finally {
      await p.discard();
    }
  }

  /** A blob of at most one chunk row: hashed here, its row and its entry written in one transaction. */
  private async putSmall(bytes: Uint8Array, expect: Partial<BlobInfo>): Promise<BlobInfo> {
    const got = { digest: createHash('sha256').update(bytes).digest('hex'), size: bytes.length };
    checkExpect(got, expect);
    await this.tx(async (t) => {
      const fresh = await t.insertInto('blobs').values({ digest: got.digest, size: got.size }).onConflict((oc) => oc.column('digest').doNothing()).returning('digest').executeTakeFirst();
      if (fresh && bytes.length) await t.insertInto('blob_chunks').values({ digest: got.digest, start: 0, bytes }).execute();
    });
    this.remember(got.digest, bytes);
    return got;
  }

  private remember(digest: string, bytes: Uint8Array): void {
    if (bytes.length > SMALL_BLOB_BYTES || this.small.has(digest)) return;
    this.small.set(digest, new Uint8Array(bytes));
    this.smallBytes += bytes.length;
    for (const [d, b] of this.small) {
      if (this.smallBytes <= SMALL_BLOBS_BUDGET) break;
      this.small.delete(d);
      this.smallBytes -= b.length;
    }
  }

  private forget(digest: string): void {
    const b = this.small.get(digest);
    if (b) this.smallBytes -= b.length;
    this.small.delete(digest);
  }

  async size(digest: string): Promise<number | undefined> {
    const r = await this.db.selectFrom('blobs').select('size').where('digest', '=', checkDigest(digest)).executeTakeFirst();
    return r ? Number(r.size) : undefined;
  }

  async read(digest: string, start: number, end: number): Promise<Uint8Array> {
    const parts: Uint8Array[] = [];
    for await (const c of this.stream(digest, { start, end, chunkBytes: Number.MAX_SAFE_INTEGER })) parts.push(c);
    return parts.length === 1 ? parts[0]! : new Uint8Array(Buffer.concat(parts));
  }

  async *stream(digest: string, opts: { start?: number; end?: number; chunkBytes?: number } = {}): AsyncIterable<Uint8Array> {
    const size = await this.size(digest);
    if (size === undefined) {
      this.forget(digest);
      throw new Error(`no blob ${digest}`);
    }
    const start = opts.start ?? 0;
    const end = Math.min(opts.end ?? size, size);
    const step = opts.chunkBytes ?? DEFAULT_BLOB_CHUNK_BYTES;
    let known = this.small.get(digest);
    if (!known && size <= SMALL_BLOB_BYTES) {
      // Read whole once (in one statement, whatever rows its uploaded chunks made), remembered for the next reads.
      const rows = await this.db.selectFrom('blob_chunks').select('bytes').where('digest', '=', digest).orderBy('start').execute();
      known = rows.length === 1 ? asBytes(rows[0]!.bytes) : new Uint8Array(Buffer.concat(rows.map((r) => asBytes(r.bytes))));
      if (known.length !== size) throw new Error(`blob ${digest}: its row holds ${known.length} of ${size} bytes`);
      this.remember(digest, known);
    }
    if (known) {
      for (let at = start; at < end; at += step) yield known.subarray(at, Math.min(at + step, end));
      return;
    }
    let pending: Uint8Array[] = [];
    let pendingBytes = 0;
    for await (const piece of this.rows('blob_chunks', 'digest', digest, start, end)) {
      let p = piece;
      while (p.length) {
        const take = Math.min(step - pendingBytes, p.length);
        pending.push(p.subarray(0, take));
        pendingBytes += take;
        p = p.subarray(take);
        if (pendingBytes === step) {
          yield pending.length === 1 ? pending[0]! : new Uint8Array(Buffer.concat(pending));
          pending = [];
          pendingBytes = 0;
        }
      }
    }
    if (pendingBytes) yield pending.length === 1 ? pending[0]! : new Uint8Array(Buffer.concat(pending));
  }

  /** The bytes [start, end) of the chunk rows of one blob or partial, one row fetched at a time. */
  private async *rows(table: 'blob_chunks' | 'blob_partial_chunks', key: 'digest' | 'id', value: string, start: number, end: number): AsyncIterable<Uint8Array> {
    const index = await (this.db as Kysely<any>).selectFrom(table).select(['start', sql<number>`octet_length(bytes)`.as('len')])
      .where(key, '=', value).orderBy('start').execute();
    for (const r of index) {
      const s = Number(r.start), e = s + Number(r.len);
      if (e <= start || s >= end) continue;
      const row = await (this.db as Kysely<any>).selectFrom(table).select('bytes').where(key, '=', value).where('start', '=', s).executeTakeFirstOrThrow();
      yield asBytes(row.bytes).subarray(Math.max(0, start - s), Math.min(e, end) - s);
    }
  }

  async readAll(digest: string): Promise<Uint8Array> {
    return this.read(digest, 0, Infinity);
  }

  async delete(digest: string): Promise<void> {
    this.forget(digest);
    await this.tx(async (t) => {
      await t.deleteFrom('blobs').where('digest', '=', checkDigest(digest)).execute();
      await t.deleteFrom('blob_chunks').where('digest', '=', digest).execute();
    });
  }

  async list(): Promise<BlobInfo[]> {
    return (await this.db.selectFrom('blobs').select(['digest', 'size']).orderBy('digest').execute()).map((r) => ({ digest: r.digest, size: Number(r.size) }));
  }

  private async hashPartial(id: string): Promise<BlobInfo> {
    const hash = createHash('sha256');
    let size = 0;
    for await (const c of this.rows('blob_partial_chunks', 'id', id, 0, Infinity)) {
      hash.update(c);
      size += c.length;
    }
    return { digest: hash.digest('hex'), size };
  }

  async partial(id: string): Promise<PartialBlob> {
    checkPartialId(id);
    await this.db.insertInto('blob_partials').values({ id, received: 0 }).onConflict((oc) => oc.column('id').doNothing()).execute();
    const received = async () => Number((await this.db.selectFrom('blob_partials').select('received').where('id', '=', id).executeTakeFirst())?.received ?? 0);
    const lock = async (t: Db) => {
      const r = await t.selectFrom('blob_partials').select('received').where('id', '=', id).forUpdate().executeTakeFirst();
      if (!r) throw new BlobMismatch(`upload ${id} is no longer open`);
      return Number(r.received);
    };
    const p: PartialBlob = {
      id,
      received,
      appendFrom: (offset, source, check) => appendGathered(p, offset, source, check),
      append: (offset, bytes) => this.tx(async (t) => {
        const have = await lock(t);
        if (offset !== have) throw new BlobOffsetConflict(have);
        for (let at = 0; at < bytes.length; at += ROW_BYTES) {
          await t.insertInto('blob_partial_chunks').values({ id, start: have + at, bytes: bytes.subarray(at, Math.min(at + ROW_BYTES, bytes.length)) }).execute();
        }
        await t.updateTable('blob_partials').set({ received: have + bytes.length }).where('id', '=', id).execute();
        return have + bytes.length;
      }),
      commit: (expect) => this.commitPartial(id, expect),
      discard: () => this.dropPartial(id),
    };
    return p;
  }

  /** Verifies a partial against `expect` and makes it a blob, in one transaction with the partial's removal. */
  private async commitPartial(id: string, expect: Partial<BlobInfo>): Promise<BlobInfo> {
    const got = await this.hashPartial(id);
    try {
      checkExpect(got, expect);
    } catch (e) {
      await this.dropPartial(id);
      throw e;
    }
    await this.tx(async (t) => {
      const r = await t.selectFrom('blob_partials').select('received').where('id', '=', id).forUpdate().executeTakeFirst();
      if (!r) throw new BlobMismatch(`upload ${id} is no longer open`);
      if (Number(r.received) !== got.size) throw new BlobMismatch(`upload ${id} changed while it was being verified`);
      const fresh = await t.insertInto('blobs').values({ digest: got.digest, size: got.size }).onConflict((oc) => oc.column('digest').doNothing()).returning('digest').executeTakeFirst();
      if (fresh) await sql`insert into blob_chunks (digest, start, bytes) select ${got.digest}, start, bytes from blob_partial_chunks where id = ${id}`.execute(t);
      await t.deleteFrom('blob_partial_chunks').where('id', '=', id).execute();
      await t.deleteFrom('blob_partials').where('id', '=', id).execute();
    });
    return got;
  }

  private dropPartial(id: string): Promise<void> {
    return this.tx(async (t) => {
      await t.deleteFrom('blob_partial_chunks').where('id', '=', id).execute();
      await t.deleteFrom('blob_partials').where('id', '=', id).execute();
    });
  }
}
