/**
 * A fit result over CHUNKED_UPLOAD_BYTES goes to the coordinator in chunks (coordinator/routes/uploads.ts), read
 * from the file the agent keeps it in (state.ts pending/), never from memory: announce it (size, sha256), send
 * each chunk at the offset the coordinator says it holds, complete. A dropped connection or a restarted
 * coordinator costs at most the chunk in flight: the retry of a chunk that did land is answered 409 with the
 * received count, and the agent goes on from there; an agent restarted mid-upload announces the same task and
 * digest again and is told where to resume. It never starts over while the coordinator keeps the upload.
 *
 * Each chunk is signed over its SHA-256 declared in x-setu-chunk-sha256 (UNSIGNED-PAYLOAD style, `unsignedPayload`,
 * on by default): the agent hashes a chunk once, the coordinator once as it streams it to disk, and a chunk that does
 * not match is refused with nothing of it kept. After a crash of the coordinator the announcement's `received` is
 * what it still holds intact (it fsyncs an upload once, at completion): the agent sends the rest from there.
 */
import { createHash } from 'node:crypto';
import { createReadStream, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { ApiError, type HttpClient } from './http.js';

/** Results larger than this are uploaded in chunks (a single body is cheaper below it). */
export const CHUNKED_UPLOAD_BYTES = 8 * 1024 * 1024;

interface UploadAnswer {
  uploadId: string;
  received: number;
  chunkBytes: number;
  size: number;
}

export interface ChunkedUploadOptions {
  /** Told after each chunk lands: bytes the coordinator holds, of `size`. */
  onProgress?: (received: number, size: number) => void;
  /** Told before each chunk is sent, and awaited (a caller may pace the upload; tests watch the offsets). */
  onChunk?: (offset: number, bytes: number) => void | Promise<void>;
  log?: (m: string) => void;
  /**
   * Sign each chunk over its declared digest (x-setu-chunk-sha256) rather than as a body the coordinator's request
   * plugin checks (x-setu-content-sha256). Default true; false for a coordinator older than the header.
   */
  unsignedPayload?: boolean;
}

/** Uploads the fit result in `file` for `taskId` in chunks; resolves with the coordinator's answer to the completion. */
export function uploadInChunks(http: HttpClient, taskId: string, file: string, o: ChunkedUploadOptions = {}): Promise<unknown> {
  return uploadFile(http, taskId, file, o, async (uploadId) => (await http.request('POST', `/v1/agent/uploads/${encodeURIComponent(uploadId)}/complete`)).json<unknown>());
}

/**
 * Announces `file` and sends its chunks, then hands the upload's id to `finish` (the completion, or under SecAgg+
 * the masked stage's request naming the upload): resolves with what `finish` answers. A vanished or short upload
 * (404, 409 upload_incomplete from `finish`) is announced again and resumed.
 */
export async function uploadFile<T>(http: HttpClient, taskId: string, file: string, o: ChunkedUploadOptions, finish: (uploadId: string) => Promise<T>): Promise<T> {
  const size = statSync(file).size;
  const digest = await sha256File(file);
  const task = encodeURIComponent(taskId);
  // An upload can vanish under us only when the coordinator dropped it (refused elsewhere, the task closed):
  // announcing again then says why (409 for a closed task), which ends the loop.
  for (let attempt = 0; ; attempt++) {
    const up = (await http.request('POST', `/v1/agent/tasks/${task}/uploads`, { type: 'application/json', data: JSON.stringify({ size, digest }) })).json<UploadAnswer>();
    if (up.received > 0) o.log?.(`task ${taskId}: resuming the upload of ${size} bytes at ${up.received} (the coordinator holds them)`);
    try {
      await sendChunks(http, up, file, size, o);
      return await finish(up.uploadId);
    } catch (e) {
      // Gone (404) or short of bytes (409 upload_incomplete): announce again and resume from what is held.
      if (e instanceof ApiError && (e.status === 404 || e.code === 'upload_incomplete') && attempt < 3) continue;
      throw e;
    }
  }
}

/** The slowest link a chunk's request is given time for (bytes/s): a 64 MiB chunk may take 4 minutes, not 60 s. */
const SLOWEST_UPLINK_BYTES_PER_S = 256 * 1024;

async function sendChunks(http: HttpClient, up: UploadAnswer, file: string, size: number, o: ChunkedUploadOptions): Promise<void> {
  const fh = await open(file, 'r');
  try {
    // One buffer for every chunk, read without blocking the agent's loop (a request is done with it once answered).
    const buffer = Buffer.allocUnsafe(Math.min(up.chunkBytes, size));
    let offset = up.received;
    while (offset < size) {
      const n = Math.min(up.chunkBytes, size - offset);
      const chunk = buffer.subarray(0, n);
      for (let got = 0; got < n;) {
        const { bytesRead } = await fh.read(chunk, got, n - got, offset + got);
        if (bytesRead === 0) throw new Error(`${file} ended at ${offset + got} bytes while its upload of ${size} bytes was being sent`);
        got += bytesRead;
      }
      await o.onChunk?.(offset, n);
      try {
        const timeoutMs = Math.max(60_000, Math.ceil((n / SLOWEST_UPLINK_BYTES_PER_S) * 1000));
        const path = `/v1/agent/uploads/${encodeURIComponent(up.uploadId)}?offset=${offset}`;
        offset = (await http.request('PUT', path, { type: 'application/octet-stream', data: chunk }, timeoutMs, { unsignedPayload: o.unsignedPayload ?? true })).json<{ received: number }>().received;
      } catch (e) {
        // The coordinator holds another count than we thought (a retried chunk that had landed): go on from it.
        if (e instanceof ApiError && e.status === 409 && typeof e.body?.['received'] === 'number') offset = e.body['received'];
        else throw e;
      }
      o.onProgress?.(offset, size);
    }
  } finally {
    await fh.close();
  }
}

async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(file)) h.update(c as Buffer);
  return h.digest('hex');
}
