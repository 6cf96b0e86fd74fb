/** The agent's side: long-poll for tasks, model download, validated result upload. */
import { TaskWake } from '../task-wake.js';
import type { RoutePlugin } from './context.js';
import { ResultMetaSchema, TaskSchema, checkValue, maxUpdateBytesOf, type ResultMeta, type StudySpec, type TaskMessage } from '../../protocol/api.js';
import type { TaskRow } from '../../store/store.js';
import { AuthError, HttpError, requireSite } from '../auth.js';
import { boundedBody, isStream, readBody } from '../plugins/signed-requests.js';
import { BlobMismatch, type BlobInfo } from '../../store/blobs/blob-store.js';
import { HEADER_CONTENT_SHA256 } from '../../protocol/signing.js';
import { IdParams, NoContent, NoQuery, ResultAcceptedReply, WaitQuery, binaryBody } from '../../protocol/replies.js';
import { digestHex, normStatsKey, studySeed } from '../engine.js';
import { taskPrivacy } from '../privacy.js';
import { transportDtypes } from '../study-model.js';
import { acceptResult, blobSource, bytesSource, checkFitUpdate, globalVersions, refuseOversized, refuser } from './results.js';
import { SharedBlobs, blobReplies, sendBlob } from './blob-reply.js';
import { InlineModels, StudySpecs } from '../task-cache.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The task a result request names, read once (in preParsing) for the size check and the handler. */
    namedTask?: TaskRow;
  }
}

/**
 * A fit result up to this size is read into memory and checked there; a larger one streams to the blob store. At most
 * this much per upload in flight, which the uploads limit bounds (plugins/limits.ts).
 */
export const SMALL_RESULT_BYTES = 64 * 1024;

export const agentRoutes: RoutePlugin = async (app, ctx) => {
  const { store, bus, now, audit } = ctx;
  const wake = new TaskWake(store, bus, ctx.taskLookMs);
  const specs = new StudySpecs(store);
  const inline = new InlineModels(store);
  // Every site of a round fetches its global model at once: held once, sent to each from the one buffer.
  const models = new SharedBlobs(store.blobs);
  app.addHook('onReady', async () => wake.start());
  app.addHook('onClose', async () => wake.stop());
  // ---- the agent's side: long-poll, model download, result upload ----
  // Query values are strings; bodies are never coerced, so the pattern does the integer check here.
  app.get<{ Querystring: { waitMs?: string } }>(
    '/v1/agent/task',
    { schema: { querystring: WaitQuery, response: { 200: TaskSchema, 204: NoContent } } },
    async (req, reply) => {
      const site = requireSite(req.principal!, 'task.poll');
      const until = now() + Math.min(Number(req.query.waitMs ?? 0), ctx.maxWaitMs ?? 25_000);
      const aborted = new AbortController();
      req.raw.on('close', () => aborted.abort());
      // A task just issued by this process's engine, as its wake-up carried it: delivered by the compare-and-set
      // alone (it was `issued`, so no older task of this site waited: the read before the wait found none), not
      // after reading the site's pending tasks again (a third of a 1,000-site round's task reads on PostgreSQL).
      let issued: TaskRow | undefined;
      for (;;) {
        if (issued && (await store.markDelivered(issued.id, now()))) return taskMessage(issued);
        const pending = await store.pendingTasks(site.id);
        const task = pending[0];
        if (task) {
          await store.markDelivered(task.id, now());
          return taskMessage(task);
        }
        const left = until - now();
        if (left <= 0 || aborted.signal.aborted) return reply.status(204).send();
        // Woken by the engine in this process, or by the one look a second for tasks issued by another coordinator
        // (task-wake.ts), so a waiting site costs no query until something is issued for it.
        const e = await bus.next((x) => x.type === 'tasks' && x.siteIds.includes(site.id), left, aborted.signal);
        issued = e?.type === 'tasks' ? e.tasks?.find((t) => t.site_id === site.id) : undefined;
      }
    },
  );

  async function taskMessage(task: TaskRow): Promise<TaskMessage> {
    const spec = await specs.byId(task.study_id);
    if (!spec) throw new Error(`task ${task.id} has no study`);
    // A tiny model travels in the task: its site makes no download request (task-cache.ts).
    const modelInline = await inline.get(task.model_version_id);
    const config = JSON.parse(task.config) as TaskMessage['fit'];
    const normStats = spec.dataSchema?.preprocessing?.normalise === 'global' ? await store.getKv(normStatsKey(task.study_id)) : undefined;
    // Client-level DP divides by the sites of a round, or by the buffer of an asynchronous study (async-rounds.ts);
    // the round's size matters only to a study with privacy, and is counted, not read.
    const privacy = task.kind === 'fit' && spec.privacy ? taskPrivacy(spec, spec.async ? spec.async.bufferSize : (await store.roundProgress(task.study_id, task.round)).tasks) : undefined;
    const rules = spec.tensorRules?.length ? (await version(task.model_version_id, spec)).rules : undefined;
    return {
      taskId: task.id,
      studyId: task.study_id,
      round: task.round,
      kind: task.kind as TaskMessage['kind'],
      ...(spec.dataSchema ? { dataSchema: spec.dataSchema } : {}),
      ...(normStats ? { normStats: JSON.parse(normStats) as NonNullable<TaskMessage['normStats']> } : {}),
      modelVersionId: task.model_version_id,
      ...(modelInline !== null ? { modelInline } : {}),
      dataset: spec.dataset,
      model: spec.model,
      ...(task.kind === 'fit' ? { fit: config } : {}),
      ...(task.kind === 'analytics' ? { analytics: JSON.parse(task.config) as NonNullable<TaskMessage['analytics']> } : {}),
      ...(rules ? { tensorRules: { local: rules.local, skip: rules.skip } } : {}),
      strategy: spec.strategy.name,
      ...(task.kind === 'fit' && transportDtypes(spec).length ? { updateDtype: transportDtypes(spec)[0] as 'F16' | 'BF16' } : {}),
      seed: studySeed(spec),
      deadlineAt: task.deadline_at,
      ...(privacy ? { privacy } : {}),
      // Every site becomes a witness of the audit head: a later rollback of the log contradicts what it holds.
      // One checkpoint a second at most for all of them (AuditLog.recentCheckpoint), not a head read and a signature per task.
      auditCheckpoint: await audit.recentCheckpoint(now()),
    };
  }

  // Streamed from the blob store; a Range resumes a download that lost its connection (site/http.ts).
  app.get<{ Params: { id: string } }>('/v1/agent/models/:id', { schema: { params: IdParams, querystring: NoQuery, response: blobReplies } }, async (req, reply) => {
    const site = requireSite(req.principal!, 'model.download');
    if (!(await store.siteMayReadModel(site.id, req.params.id))) throw new HttpError(404, 'not_found', `no model ${req.params.id} for this site`);
    const mv = await store.getModelVersion(req.params.id);
    if (!mv) throw new HttpError(404, 'not_found', `no model ${req.params.id}`);
    return sendBlob(req, reply, models, mv);
  });

  // The global model each update started from: its header's layout (the study's tensors that are aggregated)
  // checks the update's names, shapes and dtypes, its values (read chunk by chunk) the update's norm.
  const version = globalVersions(store);

  // A result in one body (a large one may go through the chunked uploads, uploads.ts, with the same checks).
  app.post<{ Params: { id: string } }>('/v1/agent/tasks/:id/result', {
    // A fit update past SMALL_RESULT_BYTES streams from the socket into the blob store, hashed there against the
    // signed digest, and its checks read it back a chunk at a time: an update in flight holds no memory of its size,
    // so the coordinator's memory does not grow with the sites uploading at once (an evaluation's JSON is read
    // whole, as everywhere).
    config: { streamedBody: true },
    schema: { params: IdParams, querystring: NoQuery, body: { content: { ...binaryBody.content, 'application/json': { schema: ResultMetaSchema } } }, response: { 200: ResultAcceptedReply } },
    // An update over its study's maxUpdateBytes is refused by its declared length, before a byte of it is read.
    preParsing: async (req) => {
      const id = (req.params as { id: string }).id;
      // Read already by the upload limit's hook (plugins/limits.ts) when it took this request's slot.
      const task = req.namedTask?.id === id ? req.namedTask : await store.getTask(id);
      if (!task || task.site_id !== req.principal?.id) return;
      // The handler uses this row (read microseconds ago; accepting it is a compare-and-set on its status anyway).
      req.namedTask = task;
      if (task.kind !== 'fit') return;
      const spec = await specs.byId(task.study_id);
      if (spec) refuseOversized(spec, Number(req.headers['content-length']));
    },
  }, async (req) => {
    const site = requireSite(req.principal!, 'update.submit');
    const task = req.namedTask?.id === req.params.id ? req.namedTask : await store.getTask(req.params.id);
    if (!task || task.site_id !== site.id) throw new HttpError(403, 'forbidden', `task ${req.params.id} was not given to this site`);
    // The digest the signature covers: a JSON body was matched against it as it was read (plugins/signed-requests.ts),
    // a streamed one is matched as it is stored, below.
    const signed = req.signedBodySha256;
    const bodyDigest = signed ?? (req.rawBody ? digestHex(req.rawBody) : null);
    const refuse = refuser(ctx, task, site, bodyDigest);
    if (task.status !== 'issued' && task.status !== 'delivered') throw new HttpError(409, 'conflict', `task ${task.id} is ${task.status}; it accepts no result`);

    const spec = await specs.byId(task.study_id);
    if (!spec) throw new Error(`task ${task.id} has no study`);
    if (task.kind === 'fit') {
      if (!isStream(req.body)) return refuse(415, 'unsupported_media_type', 'a fit result must be a safetensors body (application/octet-stream)');
      if (signed === undefined) throw new AuthError('unauthenticated', 'a fit result must be signed over its body', site.id);
      const limit = maxUpdateBytesOf(spec);
      const declared = Number(req.headers['content-length']);
      if (Number.isSafeInteger(declared) && declared <= SMALL_RESULT_BYTES) {
        // A small update is read whole (hashed against the signature as it arrives), checked in memory and stored
        // only once every check passed: a round of a thousand tiny updates makes no blob-store round trips to check
        // them (streamed, a 1,000-site PostgreSQL round made six blob reads per update and took 9 s, not 5).
        const bytes = await readBody(req, req.body, Math.min(ctx.bodyLimit, limit));
        const view = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        const meta = await checkFitUpdate(bytesSource(view), await version(task.model_version_id, spec), store.blobs, spec, refuse);
        return acceptResult(ctx, { task, site, spec, meta, blob: () => store.blobs.put(view), sentDigest: signed, refuse });
      }
      // A blob with these bytes may be there already (another update, a model version): it is not ours to remove.
      const existed = (await store.blobs.size(signed)) !== undefined;
      let blob: BlobInfo;
      try {
        blob = await store.blobs.putStream(boundedBody(req, req.body, { bodyLimit: ctx.bodyLimit, maxBytes: limit, overMax: () => new HttpError(413, 'update_too_large', `the update runs past study ${spec.name}'s maxUpdateBytes limit of ${limit} bytes`) }), { digest: signed });
      } catch (e) {
        if (e instanceof BlobMismatch) throw new AuthError('unauthenticated', `the body received is not the body the signature covers (${HEADER_CONTENT_SHA256} ${signed}): ${e.message}; nothing of it was kept`, site.id);
        throw e;
      }
      try {
        const meta = await checkFitUpdate(blobSource(store.blobs, blob), await version(task.model_version_id, spec), store.blobs, spec, refuse);
        return await acceptResult(ctx, { task, site, spec, meta, blob, sentDigest: blob.digest, refuse });
      } catch (e) {
        // A refused update keeps nothing; a conflict (the task answered meanwhile, perhaps by this very update sent
        // twice at once) leaves the bytes to the update that holds them.
        if (e instanceof HttpError && e.status !== 409 && !existed) await store.blobs.delete(blob.digest);
        throw e;
      }
    }
    const problems = checkValue(ResultMetaSchema, req.body);
    if (problems.length) return refuse(400, 'malformed_result', `evaluation result: ${problems.join('; ')}`);
    return acceptResult(ctx, { task, site, spec, meta: req.body as ResultMeta, blob: null, sentDigest: bodyDigest, refuse });
  });

}
