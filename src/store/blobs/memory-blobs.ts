/** The in-memory blob store (tests, simulations): same contract as the file and PostgreSQL ones. */
import { createHash } from 'node:crypto';
import { checkDigest, checkPartialId } from './names.js';
import { BlobMismatch, BlobOffsetConflict, DEFAULT_BLOB_CHUNK_BYTES, appendGathered, type BlobInfo, type BlobStore, type PartialBlob } from './blob-store.js';

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

export class MemoryBlobStore implements BlobStore {
  readonly kind = 'memory' as const;
  private readonly blobs = new Map<string, Uint8Array>();
  private readonly partials = new Map<string, Uint8Array[]>();

  async put(bytes: Uint8Array): Promise<BlobInfo> {
    const digest = sha256(bytes);
    if (!this.blobs.has(digest)) this.blobs.set(digest, new Uint8Array(bytes));
    return { digest, size: bytes.length };
  }

  async putStream(chunks: AsyncIterable<Uint8Array>, expect: Partial<BlobInfo> = {}): Promise<BlobInfo> {
    const parts: Uint8Array[] = [];
    for await (const c of chunks) parts.push(new Uint8Array(c));
    const bytes = Buffer.concat(parts);
    const info = { digest: sha256(bytes), size: bytes.length };
    checkExpect(info, expect);
    return this.put(bytes);
  }

  async size(digest: string): Promise<number | undefined> {
    return this.blobs.get(checkDigest(digest))?.length;
  }

  async read(digest: string, start: number, end: number): Promise<Uint8Array> {
    const b = this.get(digest);
    return new Uint8Array(b.subarray(start, Math.min(end, b.length)));
  }

  async *stream(digest: string, opts: { start?: number; end?: number; chunkBytes?: number } = {}): AsyncIterable<Uint8Array> {
    const b = this.get(digest);
    const end = Math.min(opts.end ?? b.length, b.length);
    const step = opts.chunkBytes ?? DEFAULT_BLOB_CHUNK_BYTES;
    for (let at = opts.start ?? 0; at < end; at += step) yield b.subarray(at, Math.min(at + step, end));
  }

  async readAll(digest: string): Promise<Uint8Array> {
    return new Uint8Array(this.get(digest));
  }

  async delete(digest: string): Promise<void> {
    this.blobs.delete(digest);
  }

  async list(): Promise<BlobInfo[]> {
    return [...this.blobs].map(([digest, b]) => ({ digest, size: b.length })).sort((a, b) => (a.digest < b.digest ? -1 : 1));
  }

  async partial(id: string): Promise<PartialBlob> {
    checkPartialId(id);
    if (!this.partials.has(id)) this.partials.set(id, []);
    const parts = () => this.partials.get(id) ?? [];
    const received = () => parts().reduce((n, p) => n + p.length, 0);
    const p: PartialBlob = {
      id,
      received: async () => received(),
      append: async (offset, bytes) => {
        if (offset !== received()) throw new BlobOffsetConflict(received());
        parts().push(new Uint8Array(bytes));
        return received();
      },
      commit: async (expect) => {
        const bytes = Buffer.concat(parts());
        this.partials.delete(id);
        checkExpect({ digest: sha256(bytes), size: bytes.length }, expect);
        return this.put(bytes);
      },
      discard: async () => {
        this.partials.delete(id);
      },
      appendFrom: (offset, source, check) => appendGathered(p, offset, source, check),
    };
    return p;
  }

  private get(digest: string): Uint8Array {
    const b = this.blobs.get(checkDigest(digest));
    if (!b) throw new Error(`no blob ${digest}`);
    return b;
  }
}

/** Shared by the backends: a size or digest other than promised refuses the blob. */
export function checkExpect(got: BlobInfo, expect: Partial<BlobInfo>): void {
  if (expect.size !== undefined && got.size !== expect.size) throw new BlobMismatch(`received ${got.size} bytes, ${expect.size} were announced`);
  if (expect.digest !== undefined && got.digest !== expect.digest.toLowerCase()) throw new BlobMismatch(`the bytes received hash to sha256 ${got.digest}, not the announced ${expect.digest}`);
}
