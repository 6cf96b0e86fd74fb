/** Studies: create from a spec, list, detail with rounds and metrics, start, stop, final model. */
import type { RouteContext, RoutePlugin } from './context.js';
import { randomBytes } from 'node:crypto';
import { Type } from '@sinclair/typebox';
import { InitialWeightsResponseSchema, StudySpecSchema, type InitialWeightsResponse, type StudySpec } from '../../protocol/api.js';
import { analyticsStudyDefaults } from '../../protocol/analytics.js';
import { encodeSafetensors, headerLayout } from '../../protocol/safetensors.js';
import { blobHeader } from '../../store/blobs/model-blobs.js';
import { blobReplies, sendBlob } from './blob-reply.js';
import { describeTensors, weightCount } from '../../protocol/tensors.js';
import { appendAudit } from '../../governance/audit-store.js';
import { StudyDetailSchema, StudySummarySchema, type StudyDetail } from '../../protocol/views.js';
import { exportCsv, studyExport } from '../study-export.js';
import { HttpError, checkOwnStudy, requireUser } from '../auth.js';
import { ExportQuery, IdParams, ModelQuery, NoBody, NoQuery, StartedReply, StopBody, StudyCreatedReply, StudyExportSchema, StudyStatusReply, TextReply, binaryBody, optionalJsonBody, type StopRequest } from '../../protocol/replies.js';
import { digestHex, initialWeights } from '../engine.js';
import { ModelProblem, checkInitialWeights, modelSpecProblems, rulesOf } from '../study-model.js';
import { progressOfRound } from './trainer.js';
import { hostStrategy } from '../strategy-host.js';
import { governedStart, governedStop } from './governance.js';
import { privacyProblems } from '../privacy.js';
import { createProblems, siteDeclarations } from '../study-checks.js';

export const studyRoutes: RoutePlugin = async (app, ctx) => {
  const { store, now } = ctx;
  // ---- studies ----
  // An analytics study may leave out the training fields; they are filled before the body is validated (protocol/analytics.ts).
  const analyticsDefaults = async (req: { body: unknown }) => void (req.body = analyticsStudyDefaults(req.body));
  app.post<{ Body: StudySpec }>('/v1/studies', { schema: { querystring: NoQuery, body: StudySpecSchema, response: { 200: StudyCreatedReply } }, preValidation: analyticsDefaults }, async (req) => {
    const user = requireUser(req.principal!, 'study.create');
    const spec = req.body;
    try {
      hostStrategy(spec); // refuses an unknown strategy or bad parameters now, not at round 1
      // A built-in family's tensors are known now, so its tensor rules are checked now; a custom model's when its
      // initial weights arrive.
      if (spec.model.kind !== 'custom') rulesOf(spec, Object.keys(initialWeights(spec)));
    } catch (e) {
      throw new HttpError(400, 'invalid_study', (e as Error).message);
    }
    // Everything that would fail later at a site (the model against the data, unknown sites or datasets, privacy a
    // site cannot apply) is refused now, each problem named (study-checks.ts; study-model.ts for custom models).
    const problems = [...modelSpecProblems(spec), ...createProblems(spec, await siteDeclarations(store)), ...privacyProblems(spec)];
    if (problems.length) throw new HttpError(400, 'invalid_study', problems.join('; '));
    const id = `${spec.name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 40) || 'study'}-${randomBytes(3).toString('hex')}`;
    const t = now();
    await store.createStudy({ id, name: spec.name, spec: JSON.stringify(spec), status: 'created', current_round: 0, participants: null, created_by: user.id, created_at: t, updated_at: t, claimed_by: null, claimed_until: null, error: null });
    return { id, status: 'created', ...(spec.model.kind === 'custom' ? { next: `PUT /v1/studies/${id}/initial-weights` } : {}) };
  });

  /**
   * The study's initial weights (a safetensors file), uploaded by its lead while the study is a draft: any tensor
   * names, shapes and dtypes for a custom model, the family's own layout for a built-in one. They become model
   * version 0, which the study starts from. One upload per study: a version, once written, never changes.
   * (Wave 2 moves model versions to a blob store with chunked, resumable uploads behind the same route.)
   */
  app.put<{ Params: { id: string } }>('/v1/studies/:id/initial-weights', { schema: { params: IdParams, querystring: NoQuery, body: binaryBody, response: { 200: InitialWeightsResponseSchema } } }, async (req): Promise<InitialWeightsResponse> => {
    const user = requireUser(req.principal!, 'study.create');
    const s = await store.getStudy(req.params.id);
    if (!s) throw new HttpError(404, 'not_found', `no study ${req.params.id}`);
    if (s.created_by !== user.id) throw new HttpError(403, 'forbidden', `study ${s.id} is led by someone else`);
    if (s.status !== 'created') throw new HttpError(409, 'conflict', `study ${s.id} is ${s.status}; its initial weights are fixed once it starts`);
    if (!Buffer.isBuffer(req.body)) throw new HttpError(415, 'unsupported_media_type', 'send the initial weights as a safetensors file (Content-Type: application/octet-stream)');
    const versionId = `${s.id}.v0`;
    const existing = await store.getModelVersion(versionId);
    if (existing) throw new HttpError(409, 'conflict', `study ${s.id} already has its initial weights (sha256 ${existing.digest}); create a new study to start from others`);
    const spec = JSON.parse(s.spec) as StudySpec;
    let weights;
    try {
      weights = checkInitialWeights(spec, new Uint8Array(req.body), spec.model.kind === 'custom' ? undefined : initialWeights(spec));
    } catch (e) {
      if (e instanceof ModelProblem) throw new HttpError(400, 'invalid_weights', e.message);
      throw e;
    }
    const bytes = encodeSafetensors(weights, { study: s.id, round: '0' });
    const { digest, size } = await store.blobs.put(bytes);
    const t = now();
    await store.transaction(async (tx) => {
      await tx.putModelVersion({ id: versionId, study_id: s.id, round: 0, digest, size, created_at: t });
      await appendAudit(tx, ctx.audit.key, { ts: t, actor: user.id, kind: 'study.initial_weights', subject: s.id, data: { modelVersion: versionId, digest, tensors: Object.keys(weights).length, parameters: weightCount(weights), uploadDigest: digestHex(req.body as Buffer) } });
    });
    return { id: s.id, modelVersionId: versionId, digest, tensors: Object.keys(weights).length, parameters: weightCount(weights), bytes: bytes.length };
  });

  app.get('/v1/studies', { schema: { querystring: NoQuery, response: { 200: Type.Array(StudySummarySchema) } } }, async (req) => {
    requireUser(req.principal!, 'study.view');
    return (await store.listStudies()).map((s) => {
      const spec = JSON.parse(s.spec) as StudySpec;
      return { id: s.id, name: s.name, status: s.status, round: s.current_round, rounds: spec.rounds, strategy: spec.strategy.name, createdAt: s.created_at, updatedAt: s.updated_at, error: s.error };
    });
  });

  app.get<{ Params: { id: string } }>('/v1/studies/:id', { schema: { params: IdParams, querystring: NoQuery, response: { 200: StudyDetailSchema } } }, async (req) => {
    requireUser(req.principal!, 'study.view');
    return studyDetail(ctx, req.params.id);
  });

  // Metrics per round and per site as a file (study-export.ts): CSV by default, or JSON with what each column means.
  app.get<{ Params: { id: string }; Querystring: { format?: string } }>('/v1/studies/:id/export', {
    schema: { params: IdParams, querystring: ExportQuery, response: { 200: { content: { 'text/csv': { schema: TextReply('one row per round and site') }, 'application/json': { schema: StudyExportSchema } } } } },
  }, async (req, reply) => {
    requireUser(req.principal!, 'study.view');
    const e = studyExport(await studyDetail(ctx, req.params.id));
    const name = `${e.study.id.replace(/[^A-Za-z0-9._-]/g, '_')}.metrics`;
    reply.header('x-setu-study', e.study.id);
    if (req.query.format === 'json') return reply.header('content-disposition', `attachment; filename="${name}.json"`).send(e);
    return reply.type('text/csv; charset=utf-8').header('content-disposition', `attachment; filename="${name}.csv"`).send(exportCsv(e));
  });

  // Start and stop go through the study lifecycle (routes/governance.ts): approvals, the jurisdiction policy
  // check, and the audit entries, in the same transaction as the change.
  app.post<{ Params: { id: string } }>('/v1/studies/:id/start', { schema: { params: IdParams, querystring: NoQuery, body: NoBody, response: { 200: StartedReply } } }, async (req, reply) => governedStart(ctx, req.principal!, req.params.id, reply));

  app.post<{ Params: { id: string }; Body: StopRequest | undefined }>('/v1/studies/:id/stop', { schema: { params: IdParams, querystring: NoQuery, body: optionalJsonBody(StopBody), response: { 200: StudyStatusReply } } }, async (req) =>
    governedStop(ctx, req.principal!, req.params.id, req.body?.reason));

  // The latest global model, or with ?round=R the model after fit round R (0: the initial model).
  app.get<{ Params: { id: string }; Querystring: { round?: string } }>('/v1/studies/:id/model', {
    schema: { params: IdParams, querystring: ModelQuery, response: blobReplies },
  }, async (req, reply) => {
    const user = requireUser(req.principal!, 'model.download');
    const s = await store.getStudy(req.params.id);
    if (!s) throw new HttpError(404, 'not_found', `no study ${req.params.id}`);
    checkOwnStudy(user, s);
    const round = req.query.round === undefined ? undefined : Number(req.query.round);
    let mv;
    if (round === undefined) mv = await store.latestModelVersion(req.params.id);
    else {
      const versions = await store.listModelVersions(req.params.id);
      const v = versions.find((x) => x.round === round);
      if (!v) throw new HttpError(404, 'not_found', `study ${req.params.id} has no model after round ${round} (it has rounds ${versions.map((x) => x.round).join(', ') || 'none yet'})`);
      mv = await store.getModelVersion(v.id);
    }
    if (!mv) throw new HttpError(404, 'not_found', `study ${req.params.id} has no model`);
    return sendBlob(req, reply, store.blobs, mv, { 'x-setu-model-version': mv.id });
  });

}

/** A study as GET /v1/studies/:id answers it: spec, participants, rounds, metrics per site and refusals. */
export async function studyDetail(ctx: RouteContext, id: string): Promise<StudyDetail> {
  const { store } = ctx;
  const s = await store.getStudy(id);
  if (!s) throw new HttpError(404, 'not_found', `no study ${id}`);
  const spec = JSON.parse(s.spec) as StudySpec;
  const rounds = await store.listRounds(s.id);
  const open = rounds.find((r) => r.status === 'open');
  const openTasks = open ? await store.listTasks(s.id, open.round) : [];
  const sites = await store.listSites();
  const nameOf = new Map(sites.map((x) => [x.id, x.name]));
  // The model's tensors, from the header of its latest version (no value is decoded).
  const mv = await store.latestModelVersion(s.id);
  const h = mv ? await blobHeader(store.blobs, mv.digest, mv.size) : undefined;
  const model = h ? { version: mv!.id, digest: mv!.digest, ...describeTensors(headerLayout(h), rulesOf(spec, h.tensors.map((t) => t.name))) } : null;
  return {
    id: s.id,
    name: s.name,
    status: s.status,
    error: s.error,
    spec,
    round: s.current_round,
    participants: (JSON.parse(s.participants ?? '[]') as string[]).map((id) => ({ id, name: nameOf.get(id) ?? id })),
    openRound: open ? { round: open.round, kind: open.kind, deadlineAt: open.deadline_at, received: await store.countUpdates(s.id, open.round), expected: openTasks.length,
      refused: openTasks.filter((t) => t.status === 'refused').length, failed: openTasks.filter((t) => t.status === 'failed').length,
      progress: (await progressOfRound(store, s.id, open.round)).map((p) => ({ ...p, site: nameOf.get(p.site) ?? p.site })) } : null,
    model,
    rounds: rounds.map((r) => ({ round: r.round, kind: r.kind, status: r.status, openedAt: r.opened_at, committedAt: r.committed_at, modelVersionId: r.model_version_id })),
    metrics: (await store.listMetrics(s.id)).map((m) => ({ round: m.round, site: m.site_id ? nameOf.get(m.site_id) ?? m.site_id : null, phase: m.phase, name: m.name, value: m.value })),
    refusals: (await store.listRefusals(s.id)).map((r) => ({ round: r.round, site: r.site_id ? nameOf.get(r.site_id) ?? r.site_id : null, reason: r.reason, at: r.at })),
    taskErrors: (await store.listTaskErrors(s.id)).map((e) => ({ round: e.round, site: nameOf.get(e.site_id) ?? e.site_id, taskId: e.task_id, code: e.code, message: e.message, at: e.at })),
  };
}
