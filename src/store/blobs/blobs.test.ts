/**
 * The BlobStore suite (blob-suite.ts) on every backend: memory, files in a temp directory, PostgreSQL's chunk table,
 * and the SQLite store's tier (tiered-blobs.ts): once as the store has it (the suite's blobs, up to 50 KB, are rows;
 * its uploads files), once with a 2 KiB limit on the same kind of database (most of them files, through the tier).
 */
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { blobSuite, type BlobBackend } from './blob-suite.js';
import { MemoryBlobStore } from './memory-blobs.js';
import { FileBlobStore } from './file-blobs.js';
import { TieredBlobStore } from './tiered-blobs.js';
import { openRawDatabase } from '../raw.js';
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
  {
    name: 'sqlite (small blobs as rows, the rest files)',
    skip: async () => false,
    open: async () => {
      const dir = mkdtempSync(join(tmpdir(), 'setu-blobs-'));
      const stores: Store[] = [await openStore(join(dir, 'setu.db'))];
      assert.equal(stores[0]!.blobs.kind, 'tiered');
      return {
        blobs: stores[0]!.blobs,
        reopen: async () => {
          stores.push(await openStore(join(dir, 'setu.db')));
          return stores.at(-1)!.blobs;
        },
        cleanup: async () => {
          for (const s of stores) await s.close();
          rmSync(dir, { recursive: true, force: true });
        },
      };
    },
  },
  {
    name: 'sqlite with a 2 KiB small-blob limit (most blobs files, through the tier)',
    skip: async () => false,
    open: async () => {
      const dir = mkdtempSync(join(tmpdir(), 'setu-blobs-'));
      await (await openStore(join(dir, 'setu.db'))).close(); // migrated: the table is there
      const raws: Awaited<ReturnType<typeof openRawDatabase>>[] = [];
      const tier = async () => {
        raws.push(await openRawDatabase(join(dir, 'setu.db')));
        return new TieredBlobStore(raws.at(-1)!, new FileBlobStore(join(dir, 'blobs')), 2048);
      };
      return {
        blobs: await tier(),
        reopen: tier,
        cleanup: async () => {
          for (const r of raws) await r.destroy();
          rmSync(dir, { recursive: true, force: true });
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
    assert.equal(await (await new FileBlobStore(join(dir, 'blobs')).partial('p2')).append(3, Buffer.from('def')), 6);
    assert.equal(await p.append(6, Buffer.from('ghi')), 9);
    const want = createHash('sha256').update('abcdefghi').digest('hex');
    assert.deepEqual(await p.commit({ digest: want, size: 9 }), { digest: want, size: 9 });
    assert.equal(Buffer.from(await blobs.readAll(want)).toString(), 'abcdefghi');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * A crash between chunks: the file store fsyncs an upload once, at commit, so a power failure may leave the last
 * acknowledged chunks torn, missing, or without their journal line. A restarted store (a new FileBlobStore on the
 * directory: nothing kept in memory) keeps the longest prefix of whole chunks that match their journal and reports
 * it as received; the agent resumes from there and the committed blob is exactly its bytes.
 */
for (const [what, crash] of [
  ['the last chunk torn (its pages half written)', (file: string) => {
    const b = readFileSync(file);
    b.fill(0, 25_000, 27_000);
    writeFileSync(file, b);
  }],
  ['the last chunk missing (the file shorter than the journal says)', (file: string) => truncateSync(file, 22_000)],
  ['the last chunk\'s journal line lost, its bytes there', (file: string) => {
    const journal = `${file}.chunks`;
    writeFileSync(journal, readFileSync(journal, 'utf8').split('\n').slice(0, 2).join('\n') + '\n');
  }],
  ['bytes past the last chunk (a chunk being written)', (file: string) => appendFileSync(file, randomBytes(3_000))],
] as const) {
  it(`a file upload resumes after a crash between chunks from what survived intact: ${what}`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'setu-blobs-'));
    try {
      const bytes = randomBytes(40_000);
      const p = await new FileBlobStore(join(dir, 'blobs')).partial('crash');
      for (let at = 0; at < 30_000; at += 10_000) await p.append(at, bytes.subarray(at, at + 10_000));
      const file = join(dir, 'blobs', 'partial', 'crash');
      crash(file);
      const restarted = new FileBlobStore(join(dir, 'blobs'));
      const q = await restarted.partial('crash');
      const held = await q.received();
      const want = what.startsWith('bytes past') ? 30_000 : 20_000;
      assert.equal(held, want, 'received is the intact prefix of whole chunks');
      assert.ok(readFileSync(file).equals(bytes.subarray(0, held)), 'the partial file holds exactly those bytes');
      assert.equal(await q.append(held, bytes.subarray(held)), 40_000);
      const digest = createHash('sha256').update(bytes).digest('hex');
      await q.commit({ digest, size: bytes.length });
      assert.ok(Buffer.from(await restarted.readAll(digest)).equals(bytes));
      assert.ok(!existsSync(file) && !existsSync(`${file}.chunks`), 'a committed upload leaves neither its file nor its journal');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
