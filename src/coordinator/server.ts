/**
 * The coordinator's HTTP API. Every route validates its input against a schema from
 * src/protocol/api.ts; every failure becomes a JSON error with a 4xx status that says what is wrong,
 * and nothing is written before all checks pass.
 */
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import { randomBytes } from 'node:crypto';
import {
  EnrolRequestSchema,
  InviteRequestSchema,
  ResultMetaSchema,
  RESULT_META_KEY,
  StudySpecSchema,
  checkValue,
  type EnrolRequest,
  type InviteRequest,
  type ResultMeta,
  type StudySpec,
  type TaskMessage,
} from '../protocol/api.js';
import { SafetensorsError, decodeSafetensors } from '../protocol/safetensors.js';
import { firstNonFinite, layoutMismatch, layoutOf, type WeightsLayout } from '../protocol/tensors.js';
import { Store, StoreConflict, type TaskRow } from '../store/store.js';
import { HttpError, authenticate, newSecret, requireSite, requireUser, sha256hex, type Principal } from './auth.js';
import { EventBus } from './events.js';
import { RoundEngine, digestHex, initialWeights, studySeed } from './engine.js';
import { encodeSafetensors } from '../protocol/safetensors.js';
import { hostStrategy } from './strategy-host.js';

export interface ServerOptions {
  store: Store;
  bus: EventBus;
  engine: RoundEngine;
  /** Largest request body accepted, bytes (default 64 MiB). */
  bodyLimit?: number;
  /** Longest long-poll, ms (default 25 s). */
  maxWaitMs?: number;
  /** A site counts as online when seen within this many ms (default 60 s). */
  onlineWindowMs?: number;
  now?: () => number;
  logger?: boolean;
  https?: { key: string | Buffer; cert: string | Buffer };
}

declare module 'fastify' {
  interface FastifyRequest {
    principal?: Principal;
  }
}

const ADMIN_ROLES = ['consortium_admin'];
const STUDY_ROLES = ['consortium_admin', 'study_lead'];
const READ_ROLES = ['consortium_admin', 'study_lead', 'site_admin', 'auditor'];

export function buildServer(opts: ServerOptions): FastifyInstance {
  const { store, bus, engine } = opts;
  const now = opts.now ?? Date.now;
  const bodyLimit = opts.bodyLimit ?? 64 * 1024 * 1024;
  const app = Fastify({
    logger: opts.logger ?? false,
    bodyLimit,
    ajv: { customOptions: { allErrors: false, coerceTypes: false, removeAdditional: false } },
    ...(opts.https ? { https: opts.https } : {}),
  } as never) as unknown as FastifyInstance;

  // Binary bodies (safetensors) arrive as Buffers, limited like every other body.
  app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer', bodyLimit }, (_req, body, done) => done(null, body));

  app.setErrorHandler((err: any, req, reply) => {
    if (err instanceof HttpError) return reply.status(err.status).send({ error: err.code, message: err.message });
    if (err instanceof StoreConflict) return reply.status(409).send({ error: 'conflict', message: err.message });
    if (err.validation) return reply.status(400).send({ error: 'invalid_request', message: `${err.validationContext ?? 'request'}${err.message.replace(/^(body|querystring|params)/, '')}` });
    if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return reply.status(413).send({ error: 'body_too_large', message: `request body exceeds the limit of ${bodyLimit} bytes` });
    if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return reply.status(415).send({ error: 'unsupported_media_type', message: err.message });
    if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) return reply.status(err.statusCode).send({ error: 'bad_request', message: err.message });
    req.log.error(err);
    return reply.status(500).send({ error: 'internal', message: 'internal error; the coordinator logged it' });
  });

  const auth = async (req: FastifyRequest) => {
    req.principal = await authenticate(store, req);
    if (req.principal.kind === 'site') await store.touchSite(req.principal.site.id, now());
  };

  app.get('/v1/health', async () => ({ ok: true, instance: engine.instanceId, time: now() }));

  // ---- enrolment ----
  app.post<{ Body: InviteRequest }>('/v1/invites', { schema: { body: InviteRequestSchema }, preHandler: auth }, async (req) => {
    requireUser(req.principal!, ADMIN_ROLES);
    const b = req.body;
    if (await store.getSiteByName(b.siteName)) throw new HttpError(409, 'conflict', `a site named ${b.siteName} is already enrolled`);
    const token = `inv_${newSecret()}`;
    const expiresAt = now() + (b.ttlHours ?? 72) * 3600_000;
    await store.createInvite({
      token_hash: sha256hex(token),
      site_name: b.siteName,
      institution: b.institution ?? null,
      jurisdiction: b.jurisdiction ?? null,
      created_by: (req.principal as { id: string }).id,
      created_at: now(),
      expires_at: expiresAt,
      used_at: null,
      site_id: null,
    });
    return { token, siteName: b.siteName, expiresAt };
  });

  app.post<{ Body: EnrolRequest }>('/v1/enrol', { schema: { body: EnrolRequestSchema } }, async (req) => {
    const credential = `site_${newSecret()}`;
    const siteId = `site-${randomBytes(6).toString('hex')}`;
    const tokenHash = sha256hex(req.body.token);
    const invite = await store.transaction(async (tx) => {
      const inv = await store.consumeInvite(tokenHash, now(), tx);
      if (!inv) return undefined;
      await store.createSite(
        {
          id: siteId,
          name: inv.site_name,
          institution: inv.institution,
          jurisdiction: inv.jurisdiction,
          credential_hash: sha256hex(credential),
          public_key: req.body.publicKey ?? null,
          status: 'active',
          created_at: now(),
          last_seen_at: now(),
        },
        tx,
      );
      await store.attachInviteToSite(tokenHash, siteId, tx);
      return inv;
    });
    if (!invite) throw new HttpError(401, 'invalid_invite', 'the invite token is unknown, already used or expired');
    return { siteId, siteName: invite.site_name, credential };
  });

  app.get('/v1/sites', { preHandler: auth }, async (req) => {
    requireUser(req.principal!, READ_ROLES);
    const window = opts.onlineWindowMs ?? 60_000;
    return (await store.listSites()).map((s) => ({
      id: s.id,
      name: s.name,
      institution: s.institution,
      jurisdiction: s.jurisdiction,
      status: s.status,
      createdAt: s.created_at,
      lastSeenAt: s.last_seen_at,
      online: s.status === 'active' && s.last_seen_at !== null && now() - s.last_seen_at < window,
    }));
  });

  app.post<{ Params: { id: string } }>('/v1/sites/:id/revoke', { preHandler: auth }, async (req) => {
    requireUser(req.principal!, ADMIN_ROLES);
    if (!(await store.setSiteStatus(req.params.id, 'revoked'))) throw new HttpError(404, 'not_found', `no site ${req.params.id}`);
    return { id: req.params.id, status: 'revoked' };
  });

  // ---- the agent's side: long-poll, model download, result upload ----
  // Query values are strings; bodies are never coerced, so the pattern does the integer check here.
  app.get<{ Querystring: { waitMs?: string } }>(
    '/v1/agent/task',
    { schema: { querystring: { type: 'object', properties: { waitMs: { type: 'string', pattern: '^[0-9]{1,5}$' } }, additionalProperties: false } }, preHandler: auth },
    async (req, reply) => {
      const site = requireSite(req.principal!);
      const until = now() + Math.min(Number(req.query.waitMs ?? 0), opts.maxWaitMs ?? 25_000);
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
        // Woken by the engine in this process; the 1 s cap catches tasks issued by another coordinator.
        await bus.waitFor((e) => e.type === 'tasks' && e.siteIds.includes(site.id), Math.min(left, 1000), aborted.signal);
      }
    },
  );

  async function taskMessage(task: TaskRow): Promise<TaskMessage> {
    const study = await store.getStudy(task.study_id);
    if (!study) throw new Error(`task ${task.id} has no study`);
    const spec = JSON.parse(study.spec) as StudySpec;
    const config = JSON.parse(task.config) as TaskMessage['fit'];
    return {
      taskId: task.id,
      studyId: task.study_id,
      round: task.round,
      kind: task.kind as 'fit' | 'evaluate',
      modelVersionId: task.model_version_id,
      dataset: spec.dataset,
      model: spec.model,
      ...(task.kind === 'fit' ? { fit: config } : {}),
      strategy: spec.strategy.name,
      seed: studySeed(spec),
      deadlineAt: task.deadline_at,
    };
  }

  app.get<{ Params: { id: string } }>('/v1/agent/models/:id', { preHandler: auth }, async (req, reply) => {
    const site = requireSite(req.principal!);
    if (!(await store.siteMayReadModel(site.id, req.params.id))) throw new HttpError(404, 'not_found', `no model ${req.params.id} for this site`);
    const mv = await store.getModelVersion(req.params.id);
    if (!mv) throw new HttpError(404, 'not_found', `no model ${req.params.id}`);
    return reply.type('application/octet-stream').header('x-setu-digest', mv.digest).send(Buffer.from(mv.weights));
  });

  const layouts = new Map<string, WeightsLayout>();
  async function layoutOfVersion(id: string): Promise<WeightsLayout> {
    let l = layouts.get(id);
    if (!l) {
      const mv = await store.getModelVersion(id);
      if (!mv) throw new Error(`model version ${id} is missing`);
      l = layoutOf(decodeSafetensors(mv.weights).weights);
      layouts.set(id, l);
    }
    return l;
  }

  app.post<{ Params: { id: string } }>('/v1/agent/tasks/:id/result', { preHandler: auth }, async (req) => {
    const site = requireSite(req.principal!);
    const task = await store.getTask(req.params.id);
    if (!task || task.site_id !== site.id) throw new HttpError(403, 'forbidden', `task ${req.params.id} was not given to this site`);
    const refuse = async (status: number, code: string, reason: string): Promise<never> => {
      await store.recordRefusal({ study_id: task.study_id, round: task.round, site_id: site.id, task_id: task.id, reason, at: now() });
      bus.emit({ type: 'update.refused', studyId: task.study_id, round: task.round, siteId: site.id, reason });
      throw new HttpError(status, code, reason);
    };
    if (task.status !== 'issued' && task.status !== 'delivered') throw new HttpError(409, 'conflict', `task ${task.id} is ${task.status}; it accepts no result`);

    let meta: ResultMeta;
    let weightsBytes: Uint8Array | null = null;
    if (task.kind === 'fit') {
      if (!Buffer.isBuffer(req.body)) return refuse(415, 'unsupported_media_type', 'a fit result must be a safetensors body (application/octet-stream)');
      weightsBytes = new Uint8Array(req.body);
      let decoded;
      try {
        decoded = decodeSafetensors(weightsBytes);
      } catch (e) {
        if (e instanceof SafetensorsError) return refuse(400, 'malformed_update', `malformed safetensors: ${e.message}`);
        throw e;
      }
      const rawMeta = decoded.metadata[RESULT_META_KEY];
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
      const mismatch = layoutMismatch(decoded.weights, await layoutOfVersion(task.model_version_id));
      if (mismatch) return refuse(400, 'wrong_shape', `update does not match the study's model: ${mismatch}`);
      const nonFinite = firstNonFinite(decoded.weights);
      if (nonFinite) return refuse(400, 'non_finite', `update refused: ${nonFinite}`);
      if (meta.numExamples < 1) return refuse(400, 'implausible_update', 'a fit result must come from at least one training example');
    } else {
      const problems = checkValue(ResultMetaSchema, req.body);
      if (problems.length) return refuse(400, 'malformed_result', `evaluation result: ${problems.join('; ')}`);
      meta = req.body as ResultMeta;
    }
    if (meta.taskId !== task.id) return refuse(400, 'wrong_task', `result names task ${meta.taskId} but was sent for ${task.id}`);
    for (const [k, v] of Object.entries({ ...meta.trainMetrics, ...meta.evalMetrics })) {
      if (!Number.isFinite(v)) return refuse(400, 'non_finite', `metric ${k} is not finite`);
    }
    try {
      await store.acceptUpdate({
        task_id: task.id,
        study_id: task.study_id,
        round: task.round,
        site_id: site.id,
        weights: weightsBytes,
        digest: weightsBytes ? digestHex(weightsBytes) : null,
        num_examples: meta.numExamples,
        metrics: JSON.stringify(meta),
        received_at: now(),
      });
    } catch (e) {
      if (e instanceof StoreConflict) throw new HttpError(409, 'conflict', e.message);
      throw e;
    }
    const [received, expected] = [await store.countUpdates(task.study_id, task.round), (await store.listTasks(task.study_id, task.round)).length];
    bus.emit({ type: 'update.accepted', studyId: task.study_id, round: task.round, siteId: site.id, received, expected });
    engine.kick();
    return { accepted: true, taskId: task.id, received, expected };
  });

  // ---- studies ----
  app.post<{ Body: StudySpec }>('/v1/studies', { schema: { body: StudySpecSchema }, preHandler: auth }, async (req) => {
    const user = requireUser(req.principal!, STUDY_ROLES);
    const spec = req.body;
    try {
      hostStrategy(spec); // refuses an unknown strategy or bad parameters now, not at round 1
      initialWeights(spec);
    } catch (e) {
      throw new HttpError(400, 'invalid_study', (e as Error).message);
    }
    if (spec.fit.localSteps === undefined && spec.fit.epochs === undefined) throw new HttpError(400, 'invalid_study', '/fit: give localSteps or epochs');
    const id = `${spec.name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 40) || 'study'}-${randomBytes(3).toString('hex')}`;
    const t = now();
    await store.createStudy({ id, name: spec.name, spec: JSON.stringify(spec), status: 'created', current_round: 0, participants: null, created_by: user.id, created_at: t, updated_at: t, claimed_by: null, claimed_until: null, error: null });
    return { id, status: 'created' };
  });

  app.get('/v1/studies', { preHandler: auth }, async (req) => {
    requireUser(req.principal!, READ_ROLES);
    return (await store.listStudies()).map((s) => {
      const spec = JSON.parse(s.spec) as StudySpec;
      return { id: s.id, name: s.name, status: s.status, round: s.current_round, rounds: spec.rounds, strategy: spec.strategy.name, createdAt: s.created_at, updatedAt: s.updated_at, error: s.error };
    });
  });

  app.get<{ Params: { id: string } }>('/v1/studies/:id', { preHandler: auth }, async (req) => {
    requireUser(req.principal!, READ_ROLES);
    const s = await store.getStudy(req.params.id);
    if (!s) throw new HttpError(404, 'not_found', `no study ${req.params.id}`);
    const spec = JSON.parse(s.spec) as StudySpec;
    const rounds = await store.listRounds(s.id);
    const open = rounds.find((r) => r.status === 'open');
    const sites = await store.listSites();
    const nameOf = new Map(sites.map((x) => [x.id, x.name]));
    return {
      id: s.id,
      name: s.name,
      status: s.status,
      error: s.error,
      spec,
      round: s.current_round,
      participants: (JSON.parse(s.participants ?? '[]') as string[]).map((id) => ({ id, name: nameOf.get(id) ?? id })),
      openRound: open ? { round: open.round, kind: open.kind, deadlineAt: open.deadline_at, received: await store.countUpdates(s.id, open.round), expected: (await store.listTasks(s.id, open.round)).length } : null,
      rounds: rounds.map((r) => ({ round: r.round, kind: r.kind, status: r.status, openedAt: r.opened_at, committedAt: r.committed_at, modelVersionId: r.model_version_id })),
      metrics: (await store.listMetrics(s.id)).map((m) => ({ round: m.round, site: m.site_id ? nameOf.get(m.site_id) ?? m.site_id : null, phase: m.phase, name: m.name, value: m.value })),
      refusals: (await store.listRefusals(s.id)).map((r) => ({ round: r.round, site: r.site_id ? nameOf.get(r.site_id) ?? r.site_id : null, reason: r.reason, at: r.at })),
    };
  });

  app.post<{ Params: { id: string } }>('/v1/studies/:id/start', { preHandler: auth }, async (req) => {
    requireUser(req.principal!, STUDY_ROLES);
    const s = await store.getStudy(req.params.id);
    if (!s) throw new HttpError(404, 'not_found', `no study ${req.params.id}`);
    if (s.status !== 'created') throw new HttpError(409, 'conflict', `study ${s.id} is ${s.status}`);
    const spec = JSON.parse(s.spec) as StudySpec;
    const active = (await store.listSites()).filter((x) => x.status === 'active');
    let participants: string[];
    if (spec.sites) {
      const byName = new Map(active.map((x) => [x.name, x.id]));
      const missing = spec.sites.filter((n) => !byName.has(n));
      if (missing.length) throw new HttpError(409, 'sites_missing', `these sites are not enrolled and active: ${missing.join(', ')}`);
      participants = spec.sites.map((n) => byName.get(n)!);
    } else participants = active.map((x) => x.id);
    if (participants.length === 0) throw new HttpError(409, 'no_sites', 'no active site can take part');
    if (spec.minSites && spec.minSites > participants.length) throw new HttpError(409, 'too_few_sites', `minSites is ${spec.minSites} but only ${participants.length} sites take part`);
    const bytes = encodeSafetensors(initialWeights(spec), { study: s.id, round: '0' });
    const t = now();
    await store.startStudy(s.id, participants, { id: `${s.id}.v0`, study_id: s.id, round: 0, weights: bytes, digest: digestHex(bytes), created_at: t }, t);
    bus.emit({ type: 'study.status', studyId: s.id, status: 'running' });
    engine.kick();
    return { id: s.id, status: 'running', participants: participants.length };
  });

  app.post<{ Params: { id: string } }>('/v1/studies/:id/stop', { preHandler: auth }, async (req) => {
    requireUser(req.principal!, STUDY_ROLES);
    await store.transitionStudy(req.params.id, ['created', 'running'], 'stopped', now());
    bus.emit({ type: 'study.status', studyId: req.params.id, status: 'stopped' });
    return { id: req.params.id, status: 'stopped' };
  });

  app.get<{ Params: { id: string } }>('/v1/studies/:id/model', { preHandler: auth }, async (req, reply) => {
    requireUser(req.principal!, STUDY_ROLES);
    const mv = await store.latestModelVersion(req.params.id);
    if (!mv) throw new HttpError(404, 'not_found', `study ${req.params.id} has no model`);
    return reply.type('application/octet-stream').header('x-setu-model-version', mv.id).header('x-setu-digest', mv.digest).send(Buffer.from(mv.weights));
  });

  return app;
}
