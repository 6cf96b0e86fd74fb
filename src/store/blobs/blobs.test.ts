/** The BlobStore suite (blob-suite.ts) on every backend: memory, files in a temp directory, PostgreSQL's chunk table. */
import { appendFileSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { blobSuite, type BlobBackend } from './blob-suite.js';
import { MemoryBlobStore } from './memory-blobs.js';
import { FileBlobStore } from './file-blobs.js';
import { createTempDatabase, pgSkipReason } from '../../testing/pg.js';
import { openStore, type Store } from '../store.js';

const BACKENDS: BlobBackend[] = [
  {
    name: 'memory',
    skip: async () => false,
    open: async () => {
      const blobs = new MemoryBlobStore();
      return { blobs, reopen: async () => blobs, cleanup: async () => {} };
    },
  },
  {
    name: 'files',
    skip: async () => false,
    open: async () => {
      const dir = mkdtempSync(join(tmpdir(), 'setu-blobs-'));
      return { blobs: new FileBlobStore(join(dir, 'blobs')), reopen: async () => new FileBlobStore(join(dir, 'blobs')), cleanup: async () => rmSync(dir, { recursive: true, force: true }) };
    },
  },
  {
    name: 'postgres',
    skip: pgSkipReason,
    open: async () => {
      const db = await createTempDatabase();
      const stores: Store[] = [await openStore(db.url)];
      return {
        blobs: stores[0]!.blobs,
        reopen: async () => {
          stores.push(await openStore(db.url));
          return stores.at(-1)!.blobs;
        },
        cleanup: async () => {
          for (const s of stores) await s.close();
          await db.drop();
        },
      };
    },
  },
];

for (const b of BACKENDS) blobSuite(b);

it('file blobs are the owner\'s only: directories 700, files 600', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-blobs-'));
  try {
    const blobs = new FileBlobStore(join(dir, 'blobs'));
    const { digest } = await blobs.put(new Uint8Array([1, 2, 3]));
    await (await blobs.partial('p1')).append(0, new Uint8Array([4]));
    const mode = (p: string) => statSync(join(dir, 'blobs', p)).mode & 0o777;
    assert.deepEqual([mode('.'), mode('sha256'), mode(`sha256/${digest.slice(0, 2)}`), mode('partial')], [0o700, 0o700, 0o700, 0o700]);
    assert.deepEqual([mode(`sha256/${digest.slice(0, 2)}/${digest}`), mode('partial/p1')], [0o600, 0o600]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

it('a file partial\'s digest is right when its kept hash fell behind the file (bytes written by another process)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'setu-blobs-'));
  try {
    const blobs = new FileBlobStore(join(dir, 'blobs'));
    const p = await blobs.partial('p2');
    await p.append(0, Buffer.from('abc'));
    // Another process (a previous coordinator on this directory) appended: the hash kept here covers 3 bytes of 6.
    appendFileSync(join(dir, 'blobs', 'partial', 'p2'), 'def');
    assert.equal(await p.append(6, Buffer.from('ghi')), 9);
    const want = createHash('sha256').update('abcdefghi').digest('hex');
    assert.deepEqual(await p.commit({ digest: want, size: 9 }), { digest: want, size: 9 });
    assert.equal(Buffer.from(await blobs.readAll(want)).toString(), 'abcdefghi');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
