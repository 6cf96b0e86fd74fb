/**
 * What the SQLite store's small-blob tier (tiered-blobs.ts) adds to the blob suite: where a blob lands (a row at
 * SMALL_BLOB_BYTES, a file one byte over, a stream that crosses the limit mid-way), that old files and rows are one
 * store (list, read, delete), that rows survive a reopen, that a put through a transaction joins it, and that the
 * migration reaches a database that already had later ones. On a real SQLite file in a temporary directory.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { BlobMismatch, SMALL_BLOB_BYTES } from './blob-store.js';
import { FileBlobStore } from './file-blobs.js';
import { openStore, type Store } from '../store.js';
import { openRawDatabase } from '../raw.js';
import { createTempDatabase, pgSkipReason } from '../../testing/pg.js';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** Every file under `dir`, relative to it, sorted (the blob directory as `ls -R` shows it). */
function listing(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => relative(dir, join(e.parentPath, e.name))).sort();
}
async function* chunksOf(b: Uint8Array, n: number): AsyncIterable<Uint8Array> {
  for (let at = 0; at < b.length; at += n) yield b.subarray(at, at + n);
}
async function collect(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const c of it) parts.push(c);
  return Buffer.concat(parts);
}

describe('the SQLite store\'s small-blob tier', () => {
  let dir: string;
  let store: Store;
  const db = () => join(dir, 'setu.db');
  const blobDir = () => join(dir, 'blobs');
  /** The rows of small_blobs, by digest (read behind the store's back). */
  const rows = async (): Promise<string[]> => {
    const raw = await openRawDatabase(db());
    try {
      return (await raw.selectFrom('small_blobs').select('digest').orderBy('digest').execute()).map((r) => r.digest as string);
    } finally {
      await raw.destroy();
    }
  };
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'setu-tier-'));
    store = await openStore(db());
  });
  after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a 400-byte put is one row and creates no file under the blob directory', async () => {
    const before = listing(blobDir());
    const bytes = randomBytes(400);
    const info = await store.blobs.put(bytes);
    assert.deepEqual(info, { digest: sha(bytes), size: 400 });
    assert.deepEqual(listing(blobDir()), before, 'no file, temporary or not');
    assert.ok((await rows()).includes(info.digest));
    assert.ok(Buffer.from(await store.blobs.readAll(info.digest)).equals(bytes));
    // A view into a larger buffer (a request body's slice) is stored as the view's bytes, not its buffer's.
    const body = randomBytes(2_000);
    const view = new Uint8Array(body.buffer, body.byteOffset + 700, 400);
    const v = await store.blobs.put(view);
    assert.deepEqual(v, { digest: sha(view), size: 400 });
    assert.ok(Buffer.from(await store.blobs.readAll(v.digest)).equals(view));
  });

  it('a blob of exactly SMALL_BLOB_BYTES is a row, one byte more a file', async () => {
    const at = randomBytes(SMALL_BLOB_BYTES), over = randomBytes(SMALL_BLOB_BYTES + 1);
    const before = listing(blobDir());
    const a = await store.blobs.put(at);
    assert.deepEqual(listing(blobDir()), before, 'at the limit: no file');
    const o = await store.blobs.put(over);
    assert.deepEqual(listing(blobDir()), [...before, `sha256/${o.digest.slice(0, 2)}/${o.digest}`].sort(), 'over it: a file under its digest');
    const r = await rows();
    assert.ok(r.includes(a.digest) && !r.includes(o.digest));
    for (const [info, bytes] of [[a, at], [o, over]] as const) {
      assert.equal(await store.blobs.size(info.digest), bytes.length);
      assert.ok(Buffer.from(await store.blobs.readAll(info.digest)).equals(bytes));
      assert.ok(Buffer.from(await store.blobs.read(info.digest, 100, 200)).equals(bytes.subarray(100, 200)));
      assert.ok((await collect(store.blobs.stream(info.digest, { start: 5, chunkBytes: 10_000 }))).equals(bytes.subarray(5)));
      const reader = await store.blobs.openReader!(info.digest);
      const target = new Uint8Array(1_000);
      await reader.readInto(target, bytes.length - 1_000);
      assert.ok(Buffer.from(target).equals(bytes.subarray(bytes.length - 1_000)));
      await assert.rejects(reader.readInto(target, bytes.length - 999), /outside/);
      await reader.close();
    }
  });

  it('putStream: a stream ending at the limit is a row; one crossing it mid-stream a file, its bytes all there', async () => {
    const at = randomBytes(SMALL_BLOB_BYTES);
    const a = await store.blobs.putStream(chunksOf(at, 10_000), { digest: sha(at), size: at.length });
    assert.ok((await rows()).includes(a.digest));
    const big = randomBytes(SMALL_BLOB_BYTES * 3 + 17);
    const before = listing(blobDir());
    // The limit falls inside the seventh 10,000-byte chunk.
    const b = await store.blobs.putStream(chunksOf(big, 10_000), { digest: sha(big) });
    assert.deepEqual(b, { digest: sha(big), size: big.length });
    assert.deepEqual(listing(blobDir()), [...before, `sha256/${b.digest.slice(0, 2)}/${b.digest}`].sort());
    assert.ok(!(await rows()).includes(b.digest));
    assert.ok(Buffer.from(await store.blobs.readAll(b.digest)).equals(big));
    // A caller that reuses its buffer between chunks: what the tier gathered before spilling was copied.
    const reused = new Uint8Array(30_000);
    const source = async function* () {
      for (let at2 = 0; at2 < big.length; at2 += reused.length) {
        const n = Math.min(reused.length, big.length - at2);
        reused.set(big.subarray(at2, at2 + n));
        yield reused.subarray(0, n);
      }
    };
    assert.deepEqual(await store.blobs.putStream(source()), b);
    const small = randomBytes(50_000);
    const reusedSmall = new Uint8Array(10_000);
    const sourceSmall = async function* () {
      for (let at2 = 0; at2 < small.length; at2 += 10_000) {
        reusedSmall.set(small.subarray(at2, at2 + 10_000));
        yield reusedSmall;
      }
    };
    const s = await store.blobs.putStream(sourceSmall());
    assert.ok(Buffer.from(await store.blobs.readAll(s.digest)).equals(small), 'gathered chunks were copied');
  });

  it('putStream past the limit that fails or mismatches stores nothing, in neither tier', async () => {
    const big = randomBytes(SMALL_BLOB_BYTES + 5_000);
    const before = { files: listing(blobDir()), rows: await rows() };
    await assert.rejects(store.blobs.putStream(chunksOf(big, 8_000), { digest: sha(Buffer.from('else')) }), BlobMismatch);
    await assert.rejects(store.blobs.putStream(chunksOf(big, 8_000), { size: big.length + 1 }), BlobMismatch);
    let closed = false;
    const failing = async function* () {
      try {
        yield* chunksOf(big, 8_000);
        throw new Error('the connection closed');
      } finally {
        closed = true;
      }
    };
    await assert.rejects(store.blobs.putStream(failing()), /connection closed/);
    assert.ok(closed);
    await assert.rejects(store.blobs.putStream(chunksOf(randomBytes(100), 8), { size: 99 }), BlobMismatch, 'a small one too');
    assert.deepEqual({ files: listing(blobDir()), rows: await rows() }, before);
  });

  it('files written before the tier (or by migration 0009) and rows are one store: list is the union, reads find both, delete removes both', async () => {
    const files = new FileBlobStore(blobDir());
    const old = randomBytes(300), both = randomBytes(500), row = randomBytes(200);
    const o = await files.put(old); // a small blob written as a file before this tier
    const b1 = await files.put(both);
    const b2 = await store.blobs.put(both); // the same bytes again: a row too
    const r = await store.blobs.put(row);
    assert.deepEqual(b1, b2);
    const listed = await store.blobs.list();
    assert.deepEqual(listed.map((x) => x.digest), [...listed.map((x) => x.digest)].sort(), 'sorted by digest');
    assert.equal(new Set(listed.map((x) => x.digest)).size, listed.length, 'a blob in both tiers is listed once');
    for (const info of [o, b1, r]) assert.deepEqual(listed.filter((x) => x.digest === info.digest), [info]);
    const fileDigests = new Set((await files.list()).map((x) => x.digest));
    assert.ok(fileDigests.has(o.digest) && !fileDigests.has(r.digest) && !(await rows()).includes(o.digest));
    assert.ok(Buffer.from(await store.blobs.readAll(o.digest)).equals(old), 'an old small file is read');
    assert.equal(await store.blobs.size(o.digest), 300);
    for (const d of [o.digest, b1.digest, r.digest]) await store.blobs.delete(d);
    for (const d of [o.digest, b1.digest, r.digest]) {
      assert.equal(await store.blobs.size(d), undefined);
      assert.equal(await files.size(d), undefined, 'no file left');
      assert.ok(!(await rows()).includes(d), 'no row left');
      await assert.rejects(async () => store.blobs.readAll(d), /no blob/);
    }
    await store.blobs.delete(sha(Buffer.from('never stored'))); // absent: nothing to do
  });

  it('a small committed upload stays a file and every read path finds it', async () => {
    const bytes = randomBytes(5_000);
    const p = await store.blobs.partial('tier-up');
    await p.append(0, bytes);
    const info = await p.commit({ digest: sha(bytes), size: 5_000 });
    assert.ok(listing(blobDir()).includes(`sha256/${info.digest.slice(0, 2)}/${info.digest}`));
    assert.equal(await store.blobs.size(info.digest), 5_000);
    assert.ok(Buffer.from(await store.blobs.read(info.digest, 10, 20)).equals(bytes.subarray(10, 20)));
    assert.ok((await collect(store.blobs.stream(info.digest, { chunkBytes: 999 }))).equals(bytes));
    const reader = await store.blobs.openReader!(info.digest);
    assert.equal(reader.size, 5_000);
    await reader.close();
    assert.ok((await store.blobs.list()).some((x) => x.digest === info.digest));
  });

  it('a small blob survives closing and reopening the store', async () => {
    const bytes = randomBytes(400);
    const info = await store.blobs.put(bytes);
    await store.close();
    store = await openStore(db());
    assert.ok(Buffer.from(await store.blobs.readAll(info.digest)).equals(bytes));
    assert.ok((await store.blobs.list()).some((x) => x.digest === info.digest));
  });

  it('a put through a transaction\'s tx joins it: gone when it rolls back, there when it commits; the store\'s own blobs are refused inside it', async () => {
    const lost = randomBytes(400), kept = randomBytes(400);
    await assert.rejects(store.transaction(async (tx) => {
      await tx.blobs.put(lost);
      assert.equal(await tx.blobs.size(sha(lost)), 400, 'seen inside the transaction');
      throw new Error('roll back');
    }), /roll back/);
    assert.equal(await store.blobs.size(sha(lost)), undefined, 'rolled back with the transaction');
    await store.transaction(async (tx) => {
      await tx.blobs.put(kept);
      await assert.rejects(store.blobs.size(sha(kept)), /through the transaction handle/, 'refused, not a wait for the transaction it runs in');
    });
    assert.ok(Buffer.from(await store.blobs.readAll(sha(kept))).equals(kept));
  });

  it('0011_small_blobs reaches a database that already had a later migration (0014) applied', async () => {
    await store.close();
    const raw = await openRawDatabase(db());
    try {
      await raw.schema.dropTable('small_blobs').execute();
      await raw.deleteFrom('kysely_migration').where('name', '=', '0011_small_blobs').execute();
      assert.ok((await raw.selectFrom('kysely_migration').select('name').execute()).some((r) => r.name === '0014_tasks_issued'));
    } finally {
      await raw.destroy();
    }
    store = await openStore(db());
    const info = await store.blobs.put(randomBytes(400));
    assert.ok((await rows()).includes(info.digest));
  });
});

describe('0011_small_blobs on PostgreSQL', async () => {
  const skip = await pgSkipReason();
  it('runs and adds no table: PostgreSQL keeps its own blob tables', { skip }, async () => {
    const t = await createTempDatabase();
    try {
      const s = await openStore(t.url);
      try {
        assert.equal(s.blobs.kind, 'postgres');
        const raw = await openRawDatabase(t.url);
        try {
          const names = (await raw.selectFrom('kysely_migration').select('name').execute()).map((r) => r.name as string);
          assert.ok(names.includes('0011_small_blobs'));
          assert.ok(!(await raw.introspection.getTables()).some((x) => x.name === 'small_blobs'));
        } finally {
          await raw.destroy();
        }
      } finally {
        await s.close();
      }
    } finally {
      await t.drop();
    }
  });
});
