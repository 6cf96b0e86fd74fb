/**
 * SecAgg+ stages over HTTP for the agents (see ../secagg.ts for the protocol and what the coordinator holds).
 * Every request is the site's own, signed like the rest of the agent API; a site only ever acts as the client id
 * of its own task. Bodies are untrusted JSON decoded by src/privacy/secagg/wire.ts; a malformed or out-of-order
 * message is refused (400/409) and changes nothing.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { RoutePlugin } from './context.js';
import { HttpError, requireSite } from '../auth.js';
import { NoContent, NoQuery, OkReply, ResultAcceptedReply, SecAggBody, SecAggPollQuery, SecAggSetupReply, SecAggStageReply, TaskIdParams, type SecAggRequest } from '../../protocol/replies.js';
import { servedElsewhere, type SecAggSession, type SessionStage } from '../secagg.js';
import { decodeKeys, decodeMaskedInput, decodeShares, decodeUnmaskResponse } from '../../privacy/secagg/wire.js';
import { ResultMetaSchema, checkValue, type ResultMeta, type StudySpec } from '../../protocol/api.js';
import { appendAudit } from '../../governance/audit-store.js';
import { StoreConflict, type TaskRow } from '../../store/store.js';
import { BlobMismatch } from '../../store/blobs/blob-store.js';
import { digestHex } from '../engine.js';
import { recordSpendInTx, spendProblem } from '../privacy.js';
import { studyCohortsOf } from '../study-cohorts.js';

export const secaggRoutes: RoutePlugin = async (app, ctx) => {
  const { store, engine, now, bus, audit } = ctx;

  async function open(req: FastifyRequest<{ Params: { taskId: string } }>, sessionId?: unknown) {
    const site = requireSite(req.principal!, 'update.submit');
    const task = await store.getTask(req.params.taskId);
    if (!task || task.site_id !== site.id) throw new HttpError(403, 'forbidden', `task ${req.params.taskId} was not given to this site`);
    const session = engine.secagg.byTask(task);
    if (!session && (await store.getRound(task.study_id, task.round))?.status !== 'open') throw new HttpError(409, 'secagg_round_closed', `round ${task.round} of ${task.study_id} has closed`);
    const elsewhere = session ? undefined : await servedElsewhere(store, task, engine.instanceId, now());
    if (elsewhere) throw new HttpError(503, 'secagg_elsewhere', elsewhere);
    if (!session) throw new HttpError(409, 'secagg_no_session', `no SecAgg+ session is open for task ${task.id} (the round has closed, or the coordinator restarted it and will issue the task again)`);
    if (sessionId !== undefined && sessionId !== session.id) throw new HttpError(409, 'secagg_session', `SecAgg+ session ${String(sessionId)} has ended; session ${session.id} replaced it: start again from setup`);
    if (session.stage === 'aborted') throw new HttpError(409, 'secagg_aborted', `the SecAgg+ round was aborted: ${session.error}`);
    return { site, task, session, clientId: session.clientOf.get(site.id)! };
  }

  /** Feeds one message to the server state machine; its refusals (order, duplicates, strangers) become 409s. */
  function feed(session: SecAggSession, stage: SessionStage, clientId: number, f: () => void): void {
    if (session.stage !== stage) throw new HttpError(409, 'secagg_stage', `the SecAgg+ round is at stage ${session.stage}, not ${stage}`);
    try {
      f();
    } catch (e) {
      throw new HttpError(409, 'secagg_refused', (e as Error).message);
    }
    session.answer(clientId, now());
    if (session.stage === 'done' || session.stage === 'aborted') engine.kick();
  }

  function decode<T>(f: () => T): T {
    try {
      return f();
    } catch (e) {
      throw new HttpError(400, 'malformed_secagg', (e as Error).message);
    }
  }

  /** Long-poll until `stage` has closed; 204 when the wait ends first (the agent asks again). */
  async function after<T>(req: FastifyRequest<{ Params: { taskId: string }; Querystring: { session?: string; waitMs?: string } }>, reply: FastifyReply, stage: SessionStage, pick: (s: SecAggSession, id: number) => T | undefined, what: string) {
    const { session, clientId } = await open(req, req.query.session);
    const until = now() + Math.min(Number(req.query.waitMs ?? 0), ctx.maxWaitMs);
    const aborted = new AbortController();
    req.raw.on('close', () => aborted.abort());
    for (;;) {
      session.advance(now());
      if (session.stage === 'aborted') throw new HttpError(409, 'secagg_aborted', `the SecAgg+ round was aborted: ${session.error}`);
      if (session.past(stage)) {
        const v = pick(session, clientId);
        if (v === undefined) throw new HttpError(409, 'secagg_dropped', `this site missed the SecAgg+ ${stage} stage and is dropped from the round (${what})`);
        return v;
      }
      const left = until - now();
      if (left <= 0 || aborted.signal.aborted) return reply.status(204).send();
      await session.wait(Math.min(left, 500), aborted.signal);
    }
  }

  // The long-polls answer their stage's message, or 204 when the wait ended first; the posts answer ok.
  const poll = { params: TaskIdParams, querystring: SecAggPollQuery, response: { 200: SecAggStageReply, 204: NoContent } };
  const post = { schema: { params: TaskIdParams, querystring: NoQuery, body: SecAggBody, response: { 200: OkReply } } };
  type P = { Params: { taskId: string }; Querystring: { session?: string; waitMs?: string } };
  type B = { Params: { taskId: string }; Body: SecAggRequest };

  app.get<P>('/v1/agent/secagg/:taskId/setup', { schema: { params: TaskIdParams, querystring: NoQuery, response: { 200: SecAggSetupReply } } }, async (req) => {
    const { session, clientId } = await open(req);
    if (session.stage !== 'keys') throw new HttpError(409, 'secagg_late', `the SecAgg+ keys stage has closed; this site is not in round ${session.round}`);
    return { session: session.id, setup: session.setup(clientId) };
  });

  app.post<B>('/v1/agent/secagg/:taskId/keys', post, async (req) => {
    const b = req.body;
    const { session, clientId } = await open(req, b.session);
    const m = decode(() => decodeKeys(b.msg));
    if (m.clientId !== clientId) throw new HttpError(403, 'forbidden', `this site is client ${clientId}, not ${m.clientId}`);
    feed(session, 'keys', clientId, () => session.server.receiveKeys(m));
    return { ok: true };
  });

  app.get<P>('/v1/agent/secagg/:taskId/neighbour-keys', { schema: poll }, (req, reply) =>
    after(req, reply, 'keys', (s, id) => s.neighbourKeys?.get(id), 'no keys from it arrived'));

  app.post<B>('/v1/agent/secagg/:taskId/shares', post, async (req) => {
    const b = req.body;
    const { session, clientId } = await open(req, b.session);
    const m = decode(() => decodeShares(b.msg));
    if (m.clientId !== clientId) throw new HttpError(403, 'forbidden', `this site is client ${clientId}, not ${m.clientId}`);
    feed(session, 'shares', clientId, () => session.server.receiveShares(m));
    return { ok: true };
  });

  app.get<P>('/v1/agent/secagg/:taskId/mask-request', { schema: poll }, (req, reply) =>
    after(req, reply, 'shares', (s, id) => s.maskRequests?.get(id), 'no shares from it arrived'));

  // The masked input and the result's metadata arrive together: the accepted row holds the metadata and the
  // digest of the masked vector, never a vector; the vector is a blob until the round's sum is taken from it.
  app.post<B>('/v1/agent/secagg/:taskId/masked', { schema: { ...post.schema, response: { 200: ResultAcceptedReply } } }, async (req) => {
    const b = req.body;
    const { site, task, session, clientId } = await open(req, b.session);
    const words = session.words;
    // Inline (base64 in the message) or, for a large model, the id of a chunked upload holding the words (uploads.ts).
    const uploadId = uploadOf(b.msg);
    const m = uploadId === undefined ? decode(() => decodeMaskedInput(b.msg, words)) : undefined;
    const sentBy = m?.clientId ?? (b.msg as { clientId?: unknown }).clientId;
    if (sentBy !== clientId) throw new HttpError(403, 'forbidden', `this site is client ${clientId}, not ${String(sentBy)}`);
    if (session.stage !== 'masked') throw new HttpError(409, 'secagg_stage', `the SecAgg+ round is at stage ${session.stage}, not masked`);
    if (!session.maskRequests?.has(clientId)) throw new HttpError(409, 'secagg_dropped', 'this site is not active in the masking stage');
    const meta = await checkMeta(task, b.meta, site.id, site.name);
    const t = now();
    const maskedBytes = m ? new Uint8Array(m.masked.buffer, m.masked.byteOffset, m.masked.byteLength) : undefined;
    // An upload's bytes become the blob here, verified against the size and sha256 it was announced with.
    const digest = maskedBytes ? digestHex(maskedBytes) : await takeUpload(site.id, task, uploadId!, words);
    try {
      await store.acceptUpdate(
        { task_id: task.id, study_id: task.study_id, round: task.round, site_id: site.id, digest, size: null, num_examples: meta.numExamples, metrics: JSON.stringify(meta), received_at: t },
        async (tx) => {
          await appendAudit(tx, audit.key, { ts: t, actor: site.id, kind: 'update.accepted', subject: task.id, data: { study: task.study_id, round: task.round, kind: 'fit', secagg: session.id, maskedDigest: digest, numExamples: meta.numExamples } });
          if (meta.privacy) await recordSpendInTx(tx, audit.key, { taskId: task.id, studyId: task.study_id, siteId: site.id, round: task.round, spend: meta.privacy, at: t });
        },
      );
    } catch (e) {
      if (e instanceof StoreConflict) throw new HttpError(409, 'conflict', e.message);
      throw e;
    }
    // The masked vector goes to the blob store (its digest is the row's): the session sums the blobs block by
    // block when the round commits (stream-secagg.ts) and holds no vector meanwhile.
    if (maskedBytes) await store.blobs.put(maskedBytes);
    // If the stage closed during the write, the server refuses the input: the site is then dropped, and the
    // engine counts only the sites whose input is in the sum.
    try {
      feed(session, 'masked', clientId, () => {
        session.server.receiveMaskedStored(clientId);
        session.maskedBlobs.set(clientId, digest);
      });
    } catch (e) {
      // Refused: the bytes are nobody's input (unless they are one already: the same input sent twice).
      if (![...session.maskedBlobs.values()].includes(digest)) await store.blobs.delete(digest).catch(() => {});
      throw e;
    }
    session.metas.set(clientId, meta);
    const { updates: received, tasks: expected } = await store.roundProgress(task.study_id, task.round);
    bus.emit({ type: 'update.accepted', studyId: task.study_id, round: task.round, siteId: site.id, received, expected });
    return { accepted: true, taskId: task.id, received, expected };
  });

  app.get<P>('/v1/agent/secagg/:taskId/unmask-request', { schema: poll }, (req, reply) =>
    after(req, reply, 'masked', (s, id) => (s.unmaskRequest?.survivors.includes(id) ? s.unmaskRequest : undefined), 'its masked input did not arrive in time'));

  app.post<B>('/v1/agent/secagg/:taskId/unmask', post, async (req) => {
    const b = req.body;
    const { session, clientId } = await open(req, b.session);
    const m = decode(() => decodeUnmaskResponse(b.msg));
    if (m.clientId !== clientId) throw new HttpError(403, 'forbidden', `this site is client ${clientId}, not ${m.clientId}`);
    feed(session, 'unmask', clientId, () => session.server.receiveUnmask(m));
    return { ok: true };
  });

  function uploadOf(msg: unknown): string | undefined {
    const u = msg && typeof msg === 'object' ? (msg as { upload?: unknown }).upload : undefined;
    if (u === undefined) return undefined;
    if (typeof u !== 'string' || !/^[0-9a-f]{32}$/.test(u)) throw new HttpError(400, 'malformed_secagg', 'masked-input upload must be the id of an upload of this task (32 lowercase hex characters)');
    return u;
  }

  /** Commits the site's finished upload of its masked input into the blob store; returns the blob's digest. */
  async function takeUpload(siteId: string, task: TaskRow, id: string, words: number): Promise<string> {
    const u = await store.getUpload(id);
    if (!u || u.site_id !== siteId || u.task_id !== task.id) throw new HttpError(404, 'not_found', `no upload ${id} of task ${task.id} for this site`);
    if (u.size !== words * 4) throw new HttpError(400, 'malformed_secagg', `upload ${id} holds ${u.size} bytes; the masked input of this round is ${words} uint32 words (${words * 4} bytes)`);
    const partial = await store.blobs.partial(u.id);
    const received = await partial.received();
    if (received !== u.size) throw new HttpError(409, 'upload_incomplete', `upload ${u.id} holds ${received} of its ${u.size} bytes; send the rest from offset ${received}`);
    try {
      await partial.commit({ digest: u.digest, size: u.size });
    } catch (e) {
      if (!(e instanceof BlobMismatch)) throw e;
      await store.deleteUpload(u.id);
      throw new HttpError(400, 'digest_mismatch', `upload ${u.id}: ${e.message}`);
    }
    await store.deleteUpload(u.id);
    return u.digest;
  }

  /** The same checks as a plain fit result's metadata (routes/agent.ts), plus the privacy report of a DP study. */
  async function checkMeta(task: TaskRow, raw: unknown, siteId: string, siteName: string): Promise<ResultMeta> {
    const problems = checkValue(ResultMetaSchema, raw);
    if (problems.length) throw new HttpError(400, 'malformed_update', `result metadata: ${problems.join('; ')}`);
    const meta = raw as ResultMeta;
    if (meta.taskId !== task.id) throw new HttpError(400, 'wrong_task', `result names task ${meta.taskId} but was sent for ${task.id}`);
    if (meta.numExamples < 1) throw new HttpError(400, 'implausible_update', 'a fit result must come from at least one training example');
    const study = await store.getStudy(task.study_id);
    const spec = JSON.parse(study!.spec) as StudySpec;
    const cohort = await store.cohortSize(siteId, spec.dataset);
    if (cohort === undefined) throw new HttpError(400, 'no_cohort', `site ${siteName} has declared no cohort size for dataset "${spec.dataset}"`);
    if (meta.numExamples > cohort) throw new HttpError(400, 'implausible_update', `numExamples ${meta.numExamples} exceeds the ${cohort} examples site ${siteName} declared`);
    const atStart = await studyCohortsOf(store).get(task.study_id, siteId);
    if (atStart !== undefined && meta.numExamples > atStart) throw new HttpError(400, 'implausible_update', `numExamples ${meta.numExamples} exceeds the ${atStart} examples site ${siteName} declared when the study started`);
    for (const [k, v] of Object.entries({ ...meta.trainMetrics, ...meta.evalMetrics })) if (!Number.isFinite(v)) throw new HttpError(400, 'non_finite', `metric ${k} is not finite`);
    const sp = spendProblem(spec, meta.privacy);
    if (sp) throw new HttpError(400, 'privacy_report', sp);
    return meta;
  }
}
