/** The agent's side: long-poll for tasks, model download, validated result upload. */
import { TaskWake } from '../task-wake.js';
import type { RoutePlugin } from './context.js';
import { RESULT_META_KEY, ResultMetaSchema, TaskSchema, checkValue, type ResultMeta, type StudySpec, type TaskMessage } from '../../protocol/api.js';
import { SafetensorsError, decodeSafetensors, decodeTensors, headerLayout, readSafetensorsHeader } from '../../protocol/safetensors.js';
import { firstNonFinite, layoutDifference, layoutOf, type ResolvedRules, type Weights, type WeightsLayout } from '../../protocol/tensors.js';
import { rulesOf, updateLayout } from '../study-model.js';
import { appendAudit } from '../../governance/audit-store.js';
import { auditsRefusal } from '../../store/audit-bounds.js';
import { StoreConflict, type TaskRow } from '../../store/store.js';
import { HttpError, requireSite } from '../auth.js';
import { BinaryReply, IdParams, NoContent, NoQuery, ResultAcceptedReply, WaitQuery, binaryBody } from '../../protocol/replies.js';
import { digestHex, normStatsKey, studySeed } from '../engine.js';
import { recordSpendInTx, spendProblem, taskPrivacy } from '../privacy.js';
import { analyticsAnswerProblem } from '../analytics-rounds.js';

export const agentRoutes: RoutePlugin = async (app, ctx) => {
  const { store, bus, engine, now, audit } = ctx;
  const wake = new TaskWake(store, bus);
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
      for (;;) {
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
        await bus.waitFor((e) => e.type === 'tasks' && e.siteIds.includes(site.id), left, aborted.signal);
      }
    },
  );

  async function taskMessage(task: TaskRow): Promise<TaskMessage> {
    const study = await store.getStudy(task.study_id);
    if (!study) throw new Error(`task ${task.id} has no study`);
    const spec = JSON.parse(study.spec) as StudySpec;
    const config = JSON.parse(task.config) as TaskMessage['fit'];
    const normStats = spec.dataSchema?.preprocessing?.normalise === 'global' ? await store.getKv(normStatsKey(task.study_id)) : undefined;
    // The round's size matters only to a study with privacy (its noise is sized by the cohort).
    const privacy = task.kind === 'fit' && spec.privacy ? taskPrivacy(spec, (await store.roundProgress(task.study_id, task.round)).tasks) : undefined;
    const rules = spec.tensorRules?.length ? (await version(task.model_version_id, spec)).rules : undefined;
    return {
      taskId: task.id,
      studyId: task.study_id,
      round: task.round,
      kind: task.kind as TaskMessage['kind'],
      ...(spec.dataSchema ? { dataSchema: spec.dataSchema } : {}),
      ...(normStats ? { normStats: JSON.parse(normStats) as NonNullable<TaskMessage['normStats']> } : {}),
      modelVersionId: task.model_version_id,
      dataset: spec.dataset,
      model: spec.model,
      ...(task.kind === 'fit' ? { fit: config } : {}),
      ...(task.kind === 'analytics' ? { analytics: JSON.parse(task.config) as NonNullable<TaskMessage['analytics']> } : {}),
      ...(rules ? { tensorRules: { local: rules.local, skip: rules.skip } } : {}),
      strategy: spec.strategy.name,
      seed: studySeed(spec),
      deadlineAt: task.deadline_at,
      ...(privacy ? { privacy } : {}),
      // Every site becomes a witness of the audit head: a later rollback of the log contradicts what it holds.
      auditCheckpoint: await audit.checkpoint(now()),
    };
  }

  // The versions being downloaded, as sent: every site of a round fetches the same one, and versions are immutable,
  // so it is read from the store (a whole model blob) once rather than once per site. A few only: RSS stays bounded.
  const downloads = new Map<string, Promise<{ digest: string; bytes: Buffer } | undefined>>();
  app.get<{ Params: { id: string } }>('/v1/agent/models/:id', { schema: { params: IdParams, querystring: NoQuery, response: { 200: { content: { 'application/octet-stream': { schema: BinaryReply } } } } } }, async (req, reply) => {
    const site = requireSite(req.principal!, 'model.download');
    if (!(await store.siteMayReadModel(site.id, req.params.id))) throw new HttpError(404, 'not_found', `no model ${req.params.id} for this site`);
    let read = downloads.get(req.params.id);
    if (!read) {
      // The read itself is shared: a round's sites ask for the version all at once.
      read = store.getModelVersion(req.params.id).then((row) => (row ? { digest: row.digest, bytes: Buffer.from(row.weights) } : undefined));
      if (downloads.size >= 4) downloads.delete(downloads.keys().next().value!);
      downloads.set(req.params.id, read);
      read.then((v) => v ?? downloads.delete(req.params.id), () => downloads.delete(req.params.id));
    }
    const mv = await read;
    if (!mv) throw new HttpError(404, 'not_found', `no model ${req.params.id}`);
    return reply.type('application/octet-stream').header('x-setu-digest', mv.digest).send(mv.bytes);
  });

  // The global model each update started from: its layout (the study's tensors that are aggregated) checks the
  // update's names, shapes and dtypes, its values the update's norm. Versions are immutable, so a small cache saves
  // decoding one per upload.
  const versions = new Map<string, { layout: WeightsLayout; weights: Weights; rules: ResolvedRules }>();
  async function version(id: string, spec: StudySpec): Promise<{ layout: WeightsLayout; weights: Weights; rules: ResolvedRules }> {
    let v = versions.get(id);
    if (!v) {
      const mv = await store.getModelVersion(id);
      if (!mv) throw new Error(`model version ${id} is missing`);
      const weights = decodeSafetensors(mv.weights).weights;
      const rules = rulesOf(spec, Object.keys(weights));
      v = { layout: updateLayout(layoutOf(weights), rules), weights, rules };
      if (versions.size > 64) versions.delete(versions.keys().next().value!);
      versions.set(id, v);
    }
    return v;
  }

  app.post<{ Params: { id: string } }>('/v1/agent/tasks/:id/result', {
    schema: { params: IdParams, querystring: NoQuery, body: { content: { ...binaryBody.content, 'application/json': { schema: ResultMetaSchema } } }, response: { 200: ResultAcceptedReply } },
  }, async (req) => {
    const site = requireSite(req.principal!, 'update.submit');
    const task = await store.getTask(req.params.id);
    if (!task || task.site_id !== site.id) throw new HttpError(403, 'forbidden', `task ${req.params.id} was not given to this site`);
    // The body's SHA-256 was taken as it was read, and matched the signature (plugins/signed-requests.ts): not again.
    const bodyDigest = req.bodyVerified && req.signedBodySha256 !== undefined ? req.signedBodySha256 : Buffer.isBuffer(req.body) ? digestHex(req.body) : req.rawBody ? digestHex(req.rawBody) : null;
    // A refusal is logged and audited (with the digest of what was sent) in one transaction; nothing else changes.
    // Bounded: one refusal row per (task, code) that counts the attempts, and an audit entry for the 1st, 2nd, 4th,
    // 8th… of them (store/audit-bounds.ts), so a site that uploads garbage in a loop cannot grow either without end.
    const refuse = async (status: number, code: string, reason: string): Promise<never> => {
      const t = now();
      await store.transaction(async (tx) => {
        const count = await tx.countRefusal({ study_id: task.study_id, round: task.round, site_id: site.id, task_id: task.id, code, reason, at: t });
        if (auditsRefusal(count)) await appendAudit(tx, audit.key, { ts: t, actor: site.id, kind: 'update.refused', subject: task.id, data: { study: task.study_id, round: task.round, code, reason, digest: bodyDigest, count } });
      });
      bus.emit({ type: 'update.refused', studyId: task.study_id, round: task.round, siteId: site.id, reason });
      throw new HttpError(status, code, reason);
    };
    if (task.status !== 'issued' && task.status !== 'delivered') throw new HttpError(409, 'conflict', `task ${task.id} is ${task.status}; it accepts no result`);

    const studyRow = await store.getStudy(task.study_id);
    if (!studyRow) throw new Error(`task ${task.id} has no study`);
    const spec = JSON.parse(studyRow.spec) as StudySpec;
    let meta: ResultMeta;
    let weightsBytes: Uint8Array | null = null;
    if (task.kind === 'fit') {
      if (!Buffer.isBuffer(req.body)) return refuse(415, 'unsupported_media_type', 'a fit result must be a safetensors body (application/octet-stream)');
      // A view of the body, not a copy of it (a whole model's bytes per upload).
      weightsBytes = new Uint8Array(req.body.buffer, req.body.byteOffset, req.body.byteLength);
      // The header first: the update's tensors are checked against the study's (names, shapes, dtypes) before any
      // value is decoded, so a wrong or oversized layout costs no decoding.
      let header, weights: Weights;
      try {
        header = readSafetensorsHeader(weightsBytes);
      } catch (e) {
        if (e instanceof SafetensorsError) return refuse(400, 'malformed_update', `malformed safetensors: ${e.message}`);
        throw e;
      }
      const mismatch = layoutDifference(headerLayout(header), (await version(task.model_version_id, spec)).layout);
      if (mismatch) return refuse(400, 'wrong_shape', `update does not match the study's model: ${mismatch}`);
      try {
        weights = decodeTensors(weightsBytes, header);
      } catch (e) {
        if (e instanceof SafetensorsError) return refuse(400, 'malformed_update', `malformed safetensors: ${e.message}`);
        throw e;
      }
      const decoded = { weights, metadata: header.metadata };
      const rawMeta = Object.hasOwn(decoded.metadata, RESULT_META_KEY) ? decoded.metadata[RESULT_META_KEY] : undefined;
      if (rawMeta === undefined) return refuse(400, 'malformed_update', `safetensors metadata lacks "${RESULT_META_KEY}"`);
      let parsed: unknown;
      try {
        parsed = JSON.parse(rawMeta);
      } catch {
        return refuse(400, 'malformed_update', `"${RESULT_META_KEY}" metadata is not JSON`);
      }
      const problems = checkValue(ResultMetaSchema, parsed);
      if (problems.length) return refuse(400, 'malformed_update', `result metadata: ${problems.join('; ')}`);
      meta = parsed as ResultMeta;
      const nonFinite = firstNonFinite(decoded.weights);
      if (nonFinite) return refuse(400, 'non_finite', `update refused: ${nonFinite}`);
      if (meta.numExamples < 1) return refuse(400, 'implausible_update', 'a fit result must come from at least one training example');
      if (spec.maxUpdateNorm !== undefined) {
        const norm = updateNorm(decoded.weights, (await version(task.model_version_id, spec)).weights);
        if (!(norm <= spec.maxUpdateNorm)) return refuse(400, 'update_norm', `update L2 norm ${norm.toPrecision(6)} exceeds the study's bound ${spec.maxUpdateNorm}`);
      }
    } else {
      const problems = checkValue(ResultMetaSchema, req.body);
      if (problems.length) return refuse(400, 'malformed_result', `evaluation result: ${problems.join('; ')}`);
      meta = req.body as ResultMeta;
    }
    if (meta.taskId !== task.id) return refuse(400, 'wrong_task', `result names task ${meta.taskId} but was sent for ${task.id}`);
    if (task.kind === 'analytics') {
      // The answer's schema, and every count against the minimum the site states (analytics-rounds.ts).
      const why = analyticsAnswerProblem(task, meta);
      if (why) return refuse(400, 'analytics_answer', `site ${site.name}: ${why}`);
    }
    if (task.kind === 'fit') {
      // A DP study's result must say what it cost the site; under SecAgg+ it must come masked (routes/secagg.ts).
      if (spec.privacy?.secagg) return refuse(409, 'secagg_required', `study ${spec.name} aggregates under SecAgg+: send the masked update through /v1/agent/secagg/${task.id}/…`);
      const sp = spendProblem(spec, meta.privacy);
      if (sp) return refuse(400, 'privacy_report', sp);
    }
    // The example count must be plausible: no more than the cohort the site declared for this dataset.
    // And never more than it had declared when the study started: a cohort raised mid-study (audited, routes/sites.ts)
    // cannot buy a larger FedAvg weight in a running study.
    const cohort = await store.cohortSize(site.id, spec.dataset);
    if (cohort === undefined) return refuse(400, 'no_cohort', `site ${site.name} has declared no cohort size for dataset "${spec.dataset}" (PUT /v1/agent/cohorts)`);
    if (meta.numExamples > cohort) return refuse(400, 'implausible_update', `numExamples ${meta.numExamples} exceeds the ${cohort} examples site ${site.name} declared for "${spec.dataset}"`);
    const atStart = await store.studyCohortSize(task.study_id, site.id);
    if (atStart !== undefined && meta.numExamples > atStart) {
      return refuse(400, 'implausible_update', `numExamples ${meta.numExamples} exceeds the ${atStart} examples site ${site.name} declared for "${spec.dataset}" when study ${spec.name} started`);
    }
    for (const [k, v] of Object.entries({ ...meta.trainMetrics, ...meta.evalMetrics })) {
      if (!Number.isFinite(v)) return refuse(400, 'non_finite', `metric ${k} is not finite`);
    }
    try {
      const t = now();
      const digest = weightsBytes ? bodyDigest : null;
      await store.acceptUpdate(
        {
          task_id: task.id,
          study_id: task.study_id,
          round: task.round,
          site_id: site.id,
          weights: weightsBytes,
          digest,
          num_examples: meta.numExamples,
          metrics: JSON.stringify(meta),
          received_at: t,
        },
        async (tx) => {
          await appendAudit(tx, audit.key, { ts: t, actor: site.id, kind: 'update.accepted', subject: task.id, data: { study: task.study_id, round: task.round, kind: task.kind, digest: digest ?? bodyDigest, numExamples: meta.numExamples } });
          // The privacy ledger moves with the accepted update, in the same transaction.
          if ((task.kind === 'fit' || task.kind === 'analytics') && meta.privacy) await recordSpendInTx(tx, audit.key, { taskId: task.id, studyId: task.study_id, siteId: site.id, round: task.round, spend: meta.privacy, at: t });
        },
      );
    } catch (e) {
      if (e instanceof StoreConflict) throw new HttpError(409, 'conflict', e.message);
      throw e;
    }
    // Counts, not rows: reading the round's tasks after every upload made a round of N sites cost N² rows.
    const progress = await store.roundProgress(task.study_id, task.round);
    const { updates: received, tasks: expected } = progress;
    bus.emit({ type: 'update.accepted', studyId: task.study_id, round: task.round, siteId: site.id, received, expected });
    // The engine at once when this answer may close the round; before that its own ticks suffice (a tick per upload
    // was a sixth of a round's statements).
    if (progress.updates + progress.closedWithoutResult >= progress.tasks) engine.kick();
    return { accepted: true, taskId: task.id, received, expected };
  });

}

/** L2 norm of an update's difference from the global model it started from (float64 sum, layout already checked). */
export function updateNorm(update: Weights, global: Weights): number {
  let ss = 0;
  for (const [k, t] of Object.entries(update)) {
    const g = global[k]!.data;
    for (let i = 0; i < t.data.length; i++) {
      const d = t.data[i]! - g[i]!;
      ss += d * d;
    }
  }
  return Math.sqrt(ss);
}
