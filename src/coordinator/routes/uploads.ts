/**
 * Chunked, resumable uploads of fit results (a large model's update), signed like every agent route:
 *
 *   POST /v1/agent/tasks/:id/uploads  {size, digest}  → {uploadId, received, chunkBytes}
 *        idempotent: the same task and digest find the upload already started and how much of it is held
 *   PUT  /v1/agent/uploads/:id?offset=N  (application/octet-stream, at most chunkBytes)  → {received}
 *        an offset other than the received count: 409 with `received`, so the agent resumes from there;
 *        signed over the chunk's declared digest (x-setu-chunk-sha256, UNSIGNED-PAYLOAD style) or its body's
 *        (x-setu-content-sha256): either way the body streams straight into the partial blob, hashed once on the
 *        way, and a chunk whose bytes do not match the signed digest is refused (400 chunk_digest_mismatch naming
 *        x-setu-chunk-sha256; 401 for x-setu-content-sha256, as on every route) with nothing of it kept
 *   GET  /v1/agent/uploads/:id  → the same answer as the POST
 *   POST /v1/agent/uploads/:id/complete  → what POST /v1/agent/tasks/:id/result answers
 *
 * The chunks land in the blob store's partial upload of the same id, so a dropped connection or a restarted
 * coordinator loses nothing received; the bytes are fsynced once, at completion, and after a crash the partial keeps
 * the acknowledged chunks it still holds intact (store/blobs/file-blobs.ts): the received count the agent is then told
 * is what survived, and it sends the rest again. Completion verifies size and sha256, then runs
 * exactly the result route's checks (results.ts) on the stored blob, a chunk at a time, and accepts it with the
 * same audit entry; a refused or mismatched upload is gone afterwards and changes nothing else (a refusal is
 * counted and audited, as for the result route). An update over its study's maxUpdateBytes is refused with 413
 * when announced; a chunk may never exceed chunkBytes (the route's body limit) nor run past the announced size.
 * Under SecAgg+ an upload carries the site's masked input instead (routes/secagg.ts takes it over at the masked
 * stage, verifying size and sha256 the same way); completing it here is refused.
 * An upload whose task closed before it completed is discarded (partial bytes and row) when its round moves on.
 */
import { randomBytes } from 'node:crypto';
import type { FastifyReply } from 'fastify';
import type { StudySpec } from '../../protocol/api.js';
import { ChunkQuery, ChunkReply, IdParams, NoBody, NoQuery, OffsetConflictReply, ResultAcceptedReply, UploadReply, UploadStartBody, binaryBody } from '../../protocol/replies.js';
import type { Readable } from 'node:stream';
import { BlobChunkMismatch, BlobChunkTooLarge, BlobMismatch, BlobOffsetConflict } from '../../store/blobs/blob-store.js';
import { HEADER_CHUNK_SHA256, HEADER_CONTENT_SHA256 } from '../../protocol/signing.js';
import { StoreConflict, type SiteRow, type UploadRow } from '../../store/store.js';
import { AuthError, HttpError, requireSite } from '../auth.js';
import type { RouteContext, RoutePlugin } from './context.js';
import { acceptResult, blobSource, checkFitUpdate, globalVersions, refuseOversized, refuser } from './results.js';

/**
 * Default largest chunk: big enough that the per-chunk costs (a request, a signature, a journal line) are small
 * against its bytes, small enough that a dropped connection costs little (a chunk is streamed to disk, not buffered;
 * uploads in flight are bounded by limits.ts `uploadBytes`).
 */
export const UPLOAD_CHUNK_BYTES = 64 * 1024 * 1024;

export const uploadRoutes: RoutePlugin = async (app, ctx) => {
  const { store } = ctx;
  const chunkBytes = Math.min(ctx.uploadChunkBytes ?? UPLOAD_CHUNK_BYTES, ctx.bodyLimit);
  const version = globalVersions(store);
  /** Completions of one upload run one at a time in this process (a retry racing the first sees its outcome). */
  const completing = new Map<string, Promise<unknown>>();

  // An upload whose task closed (its round committed or expired, the study stopped) will never complete: its
  // partial bytes go, after each such event in this process and once at start (a coordinator restarted).
  let sweeping: Promise<void> = Promise.resolve();
  const sweep = () => {
    sweeping = sweeping.then(async () => {
      for (const u of await store.staleUploads()) {
        await (await store.blobs.partial(u.id)).discard();
        await store.deleteUpload(u.id);
      }
    }).catch((e: unknown) => app.log.warn({ err: e }, 'could not discard the uploads of closed tasks; the next round retries'));
  };
  ctx.bus.on((e) => {
    if (e.type === 'round.committed' || e.type === 'round.opened' || (e.type === 'study.status' && e.status !== 'running')) sweep();
  });
  sweep();
  app.addHook('onClose', async () => sweeping);

  const answer = async (u: UploadRow) => ({ uploadId: u.id, taskId: u.task_id, size: u.size, digest: u.digest, received: await (await store.blobs.partial(u.id)).received(), chunkBytes });

  /** The site's own upload, or 404 (another site's upload is not there for it). */
  async function uploadOf(site: SiteRow, id: string): Promise<UploadRow> {
    const u = await store.getUpload(id);
    if (!u || u.site_id !== site.id) throw new HttpError(404, 'not_found', `no upload ${id} for this site (start one with POST /v1/agent/tasks/:id/uploads)`);
    return u;
  }

  /** The open fit task an upload is for, and its study's spec: what the result route checks first. */
  async function openFitTask(ctx: RouteContext, site: SiteRow, taskId: string) {
    const task = await ctx.store.getTask(taskId);
    if (!task || task.site_id !== site.id) throw new HttpError(403, 'forbidden', `task ${taskId} was not given to this site`);
    if (task.status !== 'issued' && task.status !== 'delivered') throw new HttpError(409, 'conflict', `task ${task.id} is ${task.status}; it accepts no result`);
    if (task.kind !== 'fit') throw new HttpError(400, 'not_a_fit_task', `task ${task.id} is a ${task.kind} task; only fit results are uploaded in chunks (send others to POST /v1/agent/tasks/${task.id}/result)`);
    const study = await ctx.store.getStudy(task.study_id);
    if (!study) throw new Error(`task ${task.id} has no study`);
    return { task, spec: JSON.parse(study.spec) as StudySpec };
  }

  app.post<{ Params: { id: string }; Body: { size: number; digest: string } }>('/v1/agent/tasks/:id/uploads', {
    schema: { params: IdParams, querystring: NoQuery, body: UploadStartBody, response: { 200: UploadReply } },
  }, async (req) => {
    const site = requireSite(req.principal!, 'update.submit');
    const { task, spec } = await openFitTask(ctx, site, req.params.id);
    refuseOversized(spec, req.body.size);
    // Under SecAgg+ the chunks carry the site's masked input (4 bytes per value, never an update in the clear); it is
    // handed over by POST /v1/agent/secagg/:taskId/masked naming the upload, not completed here.
    const existing = await store.findUpload(task.id, req.body.digest);
    if (existing) {
      if (existing.size !== req.body.size) throw new HttpError(409, 'conflict', `an upload of sha256 ${req.body.digest} for task ${task.id} was started with ${existing.size} bytes, not ${req.body.size}`);
      return answer(existing);
    }
    const row: UploadRow = { id: randomBytes(16).toString('hex'), task_id: task.id, site_id: site.id, digest: req.body.digest, size: req.body.size, created_at: ctx.now() };
    try {
      await store.createUpload(row);
    } catch (e) {
      // The same announcement twice at once: both get the one upload.
      const again = e instanceof StoreConflict ? await store.findUpload(task.id, req.body.digest) : undefined;
      if (!again) throw e;
      return answer(again);
    }
    return answer(row);
  });

  app.get<{ Params: { id: string } }>('/v1/agent/uploads/:id', { schema: { params: IdParams, querystring: NoQuery, response: { 200: UploadReply } } }, async (req) => {
    const site = requireSite(req.principal!, 'update.submit');
    return answer(await uploadOf(site, req.params.id));
  });

  app.put<{ Params: { id: string }; Querystring: { offset: string } }>('/v1/agent/uploads/:id', {
    bodyLimit: chunkBytes,
    // The body is the request's stream, unread (plugins/signed-requests.ts): appendFrom hashes it against the signed
    // digest on its way into the partial file and keeps nothing that does not match.
    config: { streamedBody: true, chunkDigest: true },
    schema: { params: IdParams, querystring: ChunkQuery, body: binaryBody, response: { 200: ChunkReply, 409: OffsetConflictReply } },
    // A chunk that would run past the announced size is refused by its declared length, before it is read.
    preParsing: async (req) => {
      const u = req.principal?.kind === 'site' ? await store.getUpload((req.params as { id: string }).id) : undefined;
      const len = Number(req.headers['content-length']);
      const offset = Number((req.query as { offset?: string }).offset);
      if (u && u.site_id === req.principal!.id && Number.isFinite(len) && offset + len > u.size) {
        throw new HttpError(413, 'chunk_too_large', `a chunk of ${len} bytes at offset ${offset} runs past the ${u.size} bytes announced for upload ${u.id}`);
      }
    },
  }, async (req, reply) => {
    const site = requireSite(req.principal!, 'update.submit');
    const u = await uploadOf(site, req.params.id);
    const offset = Number(req.query.offset);
    const body = req.body as Readable | Buffer | undefined;
    const source: AsyncIterable<Uint8Array> | Uint8Array[] = body === undefined ? [] : Buffer.isBuffer(body) ? [body] : body;
    const signed = req.signedBodySha256!;
    try {
      const received = await (await store.blobs.partial(u.id)).appendFrom(offset, source, { sha256: signed, maxBytes: Math.max(0, Math.min(chunkBytes, u.size - offset)) });
      return { uploadId: u.id, received, size: u.size };
    } catch (e) {
      if (e instanceof BlobOffsetConflict) return offsetConflict(reply, 'offset_conflict', e.message, e.received);
      if (e instanceof BlobChunkTooLarge) throw new HttpError(413, 'chunk_too_large', `a chunk at offset ${offset} may hold at most ${e.maxBytes} bytes (chunkBytes ${chunkBytes}, ${u.size} announced for upload ${u.id}); nothing of it was kept`);
      if (e instanceof BlobChunkMismatch) {
        if (req.unsignedPayload) throw new HttpError(400, 'chunk_digest_mismatch', `${HEADER_CHUNK_SHA256}: ${e.message}`);
        throw new AuthError('unauthenticated', `the body received (${e.bytes} bytes, SHA-256 ${e.actual}) is not the body the signature covers (${HEADER_CONTENT_SHA256} ${e.declared}); nothing of it was kept`, site.id);
      }
      throw e;
    }
  });

  app.post<{ Params: { id: string } }>('/v1/agent/uploads/:id/complete', {
    schema: { params: IdParams, querystring: NoQuery, body: NoBody, response: { 200: ResultAcceptedReply, 409: OffsetConflictReply } },
  }, async (req, reply) => {
    const site = requireSite(req.principal!, 'update.submit');
    const u = await uploadOf(site, req.params.id);
    const prev = completing.get(u.id) ?? Promise.resolve();
    const run = prev.catch(() => {}).then(() => complete(site, u, reply));
    completing.set(u.id, run);
    try {
      return await run;
    } finally {
      if (completing.get(u.id) === run) completing.delete(u.id);
    }
  });

  async function complete(site: SiteRow, announced: UploadRow, reply: FastifyReply) {
    const u = await uploadOf(site, announced.id); // a completion that waited for another may find it done
    const { task, spec } = await openFitTask(ctx, site, u.task_id);
    if (spec.privacy?.secagg) throw new HttpError(409, 'secagg_required', `study ${spec.name} aggregates under SecAgg+: an upload holds a masked input, handed over with POST /v1/agent/secagg/${task.id}/masked {msg: {stage: 'masked-input', clientId, upload: '${u.id}'}}`);
    const partial = await store.blobs.partial(u.id);
    const received = await partial.received();
    if (received !== u.size) return offsetConflict(reply, 'upload_incomplete', `upload ${u.id} holds ${received} of its ${u.size} bytes; send the rest from offset ${received}`, received);
    const refuse = refuser(ctx, task, site, u.digest);
    const blob = { digest: u.digest, size: u.size };
    // A blob with these bytes may be there already (another update, a model version): it is not ours to remove.
    const existed = (await store.blobs.size(u.digest)) !== undefined;
    const discard = async () => {
      if (!existed) await store.blobs.delete(u.digest);
      await store.deleteUpload(u.id);
    };
    try {
      await partial.commit(blob);
    } catch (e) {
      if (!(e instanceof BlobMismatch)) throw e;
      await store.deleteUpload(u.id);
      return refuse(400, 'digest_mismatch', `upload ${u.id}: ${e.message}`);
    }
    try {
      const meta = await checkFitUpdate(blobSource(store.blobs, blob), await version(task.model_version_id, spec), store.blobs, spec, refuse);
      return await acceptResult(ctx, { task, site, spec, meta, blob, sentDigest: u.digest, refuse, inTx: (tx) => tx.deleteUpload(u.id) });
    } catch (e) {
      if (e instanceof HttpError) await discard();
      throw e;
    }
  }
};

function offsetConflict(reply: FastifyReply, error: string, message: string, received: number) {
  return reply.status(409).send({ error, message, received });
}
