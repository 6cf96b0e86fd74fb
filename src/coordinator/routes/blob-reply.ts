/**
 * Sending a stored blob (a model version) as an HTTP answer: streamed from the blob store chunk by chunk, never
 * read whole into memory, with `Range: bytes=a-b` / `bytes=a-` (206 and Content-Range) so a download that lost
 * its connection resumes where it stopped. `x-setu-digest` lets the receiver verify the whole file. A version that
 * every site of a round downloads at once is held once in memory (`SharedBlobs`) and each answer is a view of it.
 */
import { Readable } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { BlobStore } from '../../store/blobs/blob-store.js';
import { BinaryReply } from '../../protocol/replies.js';
import { HttpError } from '../auth.js';
import { setBounded } from '../bounded-map.js';

/** The answers a blob download declares: the whole file, or the part a Range asked for. */
export const blobReplies = {
  200: { content: { 'application/octet-stream': { schema: BinaryReply } } },
  206: { content: { 'application/octet-stream': { schema: BinaryReply } } },
};

/** [start, end) of a `Range: bytes=…` header over a blob of `size` bytes; undefined for the whole blob. */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | undefined {
  if (header === undefined) return undefined;
  const m = /^bytes=(\d+)-(\d*)$/.exec(header.trim());
  if (!m) throw new HttpError(416, 'range_not_satisfiable', `Range must be "bytes=START-" or "bytes=START-END" (one range), not ${JSON.stringify(header.slice(0, 80))}`);
  const start = Number(m[1]);
  const end = m[2] === '' ? size : Math.min(Number(m[2]) + 1, size);
  if (start >= size || end <= start) throw new HttpError(416, 'range_not_satisfiable', `Range ${header} is outside the ${size}-byte file`);
  return { start, end };
}

/** Largest blob `SharedBlobs` holds in memory, and how many it holds: what it may cost, whatever the sites. */
export const SHARED_BLOB_MAX_BYTES = 32 * 1024 * 1024;
const SHARED_BLOBS = 2;

/**
 * The blobs many downloads want at once (a round's global model, fetched by every site the moment the round opens),
 * each read once and held whole while it is wanted: every answer is then a view of the one buffer, which the sockets
 * send from without a copy. Streamed from the store instead, each open download held its own read-ahead (about
 * 0.8 MB), so a round of 300 sites fetching a 4 MB model held 240 MB more than one of 10 (`setu bench live --model
 * mlp`). Blobs are named by their digest, so a held one is never stale; larger ones still stream.
 */
export class SharedBlobs {
  private readonly held = new Map<string, Promise<Buffer>>();
  constructor(readonly store: BlobStore, private readonly maxBytes = SHARED_BLOB_MAX_BYTES) {}

  /** The blob's bytes, read once for every caller; undefined for one too large to hold. */
  get(blob: { digest: string; size: number }): Promise<Buffer> | undefined {
    if (blob.size > this.maxBytes) return undefined;
    const hit = this.held.get(blob.digest);
    if (hit) {
      // Most recently wanted last: the one evicted is the oldest version.
      this.held.delete(blob.digest);
      this.held.set(blob.digest, hit);
      return hit;
    }
    const p = this.store.read(blob.digest, 0, blob.size).then((b) => Buffer.from(b.buffer, b.byteOffset, b.byteLength));
    p.catch(() => this.held.delete(blob.digest));
    return setBounded(this.held, blob.digest, p, SHARED_BLOBS);
  }
}

export async function sendBlob(req: FastifyRequest, reply: FastifyReply, blobs: BlobStore | SharedBlobs, blob: { digest: string; size: number }, headers: Record<string, string> = {}): Promise<FastifyReply> {
  const range = parseRange(req.headers.range, blob.size);
  reply.type('application/octet-stream').header('accept-ranges', 'bytes').header('x-setu-digest', blob.digest);
  for (const [k, v] of Object.entries(headers)) reply.header(k, v);
  const { start, end } = range ?? { start: 0, end: blob.size };
  if (range) reply.status(206).header('content-range', `bytes ${start}-${end - 1}/${blob.size}`);
  reply.header('content-length', String(end - start));
  const [store, held] = blobs instanceof SharedBlobs ? [blobs.store, blobs.get(blob)] : [blobs, undefined];
  if (held) return reply.send((await held).subarray(start, end));
  // Small chunks, one read ahead: every open download holds what it read and has not yet sent. With the store's 4 MiB
  // chunks and Readable.from's sixteen objects ahead, a round of 100 sites fetching a 4 MB model at once held the
  // whole model once per site (peak RSS 633 MiB against 238 MiB for 10 sites, `setu bench live --model mlp`).
  return reply.send(Readable.from(store.stream(blob.digest, { start, end, chunkBytes: DOWNLOAD_CHUNK_BYTES }), { highWaterMark: 1 }));
}

/** The bytes a download reads from the blob store at a time. */
export const DOWNLOAD_CHUNK_BYTES = 256 * 1024;
