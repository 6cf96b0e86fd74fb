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
import { BlobMismatch, BlobOffsetConflict, DEFAULT_BLOB_CHUNK_BYTES, appendGathered, type BlobInfo, type BlobStore, type PartialBlob } from './blob-store.js';
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

const asBytes = (v: unknown): Uint8Array => {
  if (v instanceof Uint8Array) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  throw new Error(`expected bytea, got ${typeof v}`);
};

export class PgBlobStore implements BlobStore {
  readonly kind = 'postgres' as const;
  private readonly db: Db;

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
    const p = await this.partial(`put-${randomBytes(12).toString('hex')}`);
    try {
      let at = 0;
      for await (const c of chunks) at = await p.append(at, c);
      return await this.commitPartial(p.id, expect);
    } finally {
      await p.discard();
    }
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
    if (size === undefined) throw new Error(`no blob ${digest}`);
    const start = opts.start ?? 0;
    const end = Math.min(opts.end ?? size, size);
    const step = opts.chunkBytes ?? DEFAULT_BLOB_CHUNK_BYTES;
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
