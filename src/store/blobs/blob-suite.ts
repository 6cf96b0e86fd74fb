/**
 * The ONE behavioural suite of the BlobStore interface, run by blobs.test.ts on every backend (memory, files,
 * PostgreSQL's chunk table, SQLite's table of small blobs over files): what one does, the others must do. `reopen` plays a restarted coordinator (a new
 * store on the same directory or database); backends that keep nothing (memory) give the same store back.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { BlobChunkMismatch, BlobChunkTooLarge, BlobMismatch, BlobOffsetConflict, type BlobStore } from './blob-store.js';

export interface BlobBackend {
  /** The backend as the test names it: memory, files, postgres, sqlite (tiered-blobs.ts), … */
  name: string;
  skip: () => Promise<string | false>;
  /** A fresh, empty store; `reopen` opens another on the same data (a restart); `cleanup` removes it all. */
  open: () => Promise<{ blobs: BlobStore; reopen: () => Promise<BlobStore>; cleanup: () => Promise<void> }>;
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
async function collect(it: AsyncIterable<Uint8Array>): Promise<{ bytes: Buffer; sizes: number[] }> {
  const parts: Uint8Array[] = [];
  for await (const c of it) parts.push(c);
  return { bytes: Buffer.concat(parts), sizes: parts.map((p) => p.length) };
}
async function* chunksOf(b: Uint8Array, n: number): AsyncIterable<Uint8Array> {
  for (let at = 0; at < b.length; at += n) yield b.subarray(at, at + n);
}

export function blobSuite(b: BlobBackend): void {
  describe(`blob store on ${b.name}`, async () => {
    const skip = await b.skip();
    let blobs: BlobStore;
    let reopen: () => Promise<BlobStore>;
    let cleanup: () => Promise<void>;
    const opened: BlobStore[] = [];
    before(async () => {
      if (skip) return;
      ({ blobs, reopen, cleanup } = await b.open());
    });
    after(async () => {
      if (skip) return;
      for (const o of opened) await o.close?.();
      await cleanup();
    });
    const again = async () => {
      const o = await reopen();
      if (o !== blobs) opened.push(o);
      return o;
    };

    it('stores bytes under their sha256, once, and reads them back whole, by range and as chunks', { skip }, async () => {
      const bytes = randomBytes(10_000);
      const info = await blobs.put(bytes);
      assert.deepEqual(info, { digest: sha(bytes), size: 10_000 });
      assert.deepEqual(await blobs.put(new Uint8Array(bytes)), info, 'the same bytes again: the same blob');
      assert.equal(await blobs.size(info.digest), 10_000);
      assert.equal(await blobs.size(sha(Buffer.from('absent'))), undefined);
      assert.ok(Buffer.from(await blobs.readAll(info.digest)).equals(bytes));
      assert.ok(Buffer.from(await blobs.read(info.digest, 100, 250)).equals(bytes.subarray(100, 250)));
      assert.ok(Buffer.from(await blobs.read(info.digest, 9_990, 20_000)).equals(bytes.subarray(9_990)), 'end is clamped to the size');
      const s = await collect(blobs.stream(info.digest, { start: 10, end: 9_000, chunkBytes: 1_000 }));
      assert.ok(s.bytes.equals(bytes.subarray(10, 9_000)));
      assert.ok(s.sizes.every((n) => n <= 1_000), `chunks of at most chunkBytes (${s.sizes})`);
      assert.ok(s.sizes.length >= 9);
      assert.deepEqual((await blobs.list()).filter((x) => x.digest === info.digest), [info]);
      assert.deepEqual([...await blobs.readAll((await blobs.put(new Uint8Array(0))).digest)], [], 'an empty blob is a blob');
    });

    it('refuses a digest that is not lowercase sha256 hex (no path or key of another kind gets through)', { skip }, async () => {
      for (const bad of ['../../etc/passwd', 'AB'.repeat(32), '']) {
        await assert.rejects(async () => blobs.size(bad), /sha256 in lowercase hex/);
        await assert.rejects(async () => blobs.readAll(bad), /sha256 in lowercase hex/);
      }
      await assert.rejects(blobs.partial('../x'), /upload id/);
    });

    it('putStream hashes while writing and refuses a promised digest or size the bytes do not have, storing nothing', { skip }, async () => {
      const bytes = randomBytes(50_000);
      const before = await blobs.list();
      await assert.rejects(blobs.putStream(chunksOf(bytes, 7_000), { digest: sha(Buffer.from('other')) }), BlobMismatch);
      await assert.rejects(blobs.putStream(chunksOf(bytes, 7_000), { size: 49_999 }), BlobMismatch);
      assert.deepEqual(await blobs.list(), before, 'nothing stored');
      const info = await blobs.putStream(chunksOf(bytes, 7_000), { digest: sha(bytes), size: bytes.length });
      assert.ok(Buffer.from(await blobs.readAll(info.digest)).equals(bytes));
    });

    it('an upload appends at its received offset only, survives a restart, and commits once verified', { skip }, async () => {
      const bytes = randomBytes(30_000);
      const p = await blobs.partial('up-1');
      assert.equal(await p.received(), 0);
      assert.equal(await p.append(0, bytes.subarray(0, 10_000)), 10_000);
      const wrong = await p.append(5_000, bytes.subarray(5_000, 6_000)).catch((e: unknown) => e);
      assert.ok(wrong instanceof BlobOffsetConflict && wrong.received === 10_000, 'a wrong offset is refused with the received count');
      const later = await (await again()).partial('up-1');
      assert.equal(await later.received(), 10_000, 'what was received is still there after a restart');
      assert.equal(await later.append(10_000, bytes.subarray(10_000)), 30_000);
      assert.equal(await blobs.size(sha(bytes)), undefined, 'not a blob before its commit');
      assert.deepEqual(await later.commit({ digest: sha(bytes), size: 30_000 }), { digest: sha(bytes), size: 30_000 });
      assert.ok(Buffer.from(await blobs.readAll(sha(bytes))).equals(bytes));
      assert.equal(await (await blobs.partial('up-1')).received(), 0, 'a committed upload is gone; the id starts afresh');
    });

    it('of concurrent appends at one offset exactly one lands', { skip }, async () => {
      const p = await blobs.partial('up-race');
      const q = await (await again()).partial('up-race');
      const chunk = randomBytes(4_000);
      const rs = await Promise.allSettled([p.append(0, chunk), q.append(0, chunk), p.append(0, chunk), q.append(0, chunk)]);
      assert.equal(rs.filter((r) => r.status === 'fulfilled').length, 1);
      assert.ok(rs.every((r) => r.status === 'fulfilled' || r.reason instanceof BlobOffsetConflict), String(rs.map((r) => r.status === 'rejected' && r.reason)));
      assert.equal(await p.received(), 4_000);
      await p.discard();
    });

    it('a commit whose bytes do not match is refused and discards the upload, storing nothing', { skip }, async () => {
      const bytes = randomBytes(5_000);
      const before = await blobs.list();
      const p = await blobs.partial('up-bad');
      await p.append(0, bytes);
      await assert.rejects(p.commit({ digest: sha(Buffer.from('else')), size: 5_000 }), BlobMismatch);
      await assert.rejects((await blobs.partial('up-bad2')).commit({ digest: sha(bytes), size: 5_000 }), BlobMismatch, 'an empty upload is not the announced blob');
      assert.equal(await (await blobs.partial('up-bad')).received(), 0);
      assert.deepEqual(await blobs.list(), before);
    });

    it('a streamed chunk lands only when it hashes to its declared digest and fits; a refused one leaves the upload\'s bytes as they were', { skip }, async () => {
      const bytes = randomBytes(24_000);
      const p = await blobs.partial('up-stream');
      // Streamed in small pieces, as a request's body arrives.
      const pieces = async function* (b: Uint8Array) {
        for (let at = 0; at < b.length; at += 1_000) yield b.subarray(at, at + 1_000);
      };
      assert.equal(await p.appendFrom(0, pieces(bytes.subarray(0, 8_000)), { sha256: sha(bytes.subarray(0, 8_000)), maxBytes: 8_000 }), 8_000);
      const tampered = Buffer.from(bytes.subarray(8_000, 16_000));
      tampered[4_321] ^= 1;
      const bad = await p.appendFrom(8_000, pieces(tampered), { sha256: sha(bytes.subarray(8_000, 16_000)), maxBytes: 8_000 }).catch((e: unknown) => e);
      assert.ok(bad instanceof BlobChunkMismatch && bad.actual === sha(tampered), `a chunk that does not match its digest is refused: ${String(bad)}`);
      await assert.rejects(p.appendFrom(8_000, pieces(bytes.subarray(8_000, 16_000)), { sha256: sha(bytes.subarray(8_000, 16_000)), maxBytes: 7_999 }), BlobChunkTooLarge);
      await assert.rejects(p.appendFrom(9_000, pieces(bytes.subarray(9_000, 16_000)), { sha256: sha(bytes.subarray(9_000, 16_000)), maxBytes: 8_000 }), BlobOffsetConflict);
      const failing = async function* () {
        yield bytes.subarray(8_000, 9_000);
        throw new Error('the connection closed mid-chunk');
      };
      await assert.rejects(p.appendFrom(8_000, failing(), { sha256: sha(bytes.subarray(8_000, 16_000)), maxBytes: 8_000 }), /closed mid-chunk/);
      const o = await (await again()).partial('up-stream');
      assert.equal(await o.received(), 8_000, 'after the refusals (and a restart) the upload holds its first chunk only');
      assert.equal(await o.appendFrom(8_000, pieces(bytes.subarray(8_000)), { sha256: sha(bytes.subarray(8_000)), maxBytes: 16_000 }), 24_000);
      await o.commit({ digest: sha(bytes), size: bytes.length });
      assert.ok(Buffer.from(await blobs.readAll(sha(bytes))).equals(bytes), 'the committed blob is exactly the chunks that matched, no byte of the refused ones');
      await blobs.delete(sha(bytes));
    });

    it('a blob written by one store is read by another on the same data, and deleted for both', { skip }, async () => {
      const bytes = randomBytes(3_000);
      const info = await blobs.put(bytes);
      const o = await again();
      assert.ok(Buffer.from(await o.readAll(info.digest)).equals(bytes));
      await o.delete(info.digest);
      assert.equal(await blobs.size(info.digest), undefined);
      await assert.rejects(async () => blobs.readAll(info.digest), /no blob/);
    });
  });
}
