/**
 * The coordinator's HTTP API. Every route validates its input against a schema from
 * src/protocol/api.ts; every failure becomes a JSON error with a 4xx status that says what is wrong,
 * and nothing is written before all checks pass.
 */
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import { Store, StoreConflict } from '../store/store.js';
import { Authenticator, HttpError, type Principal } from './auth.js';
import type { AuditLog } from '../governance/audit-store.js';
import { userRoutes } from './routes/users.js';
import { auditRoutes } from './routes/audit.js';
import { EventBus } from './events.js';
import { RoundEngine } from './engine.js';
import type { RouteContext } from './routes/context.js';
import { siteRoutes } from './routes/sites.js';
import { agentRoutes } from './routes/agent.js';
import { studyRoutes } from './routes/studies.js';
import { eventRoutes } from './routes/events.js';
import { registerOpenApi, webRoutes } from './routes/web.js';
import { institutionRoutes } from './routes/institutions.js';
import { governanceRoutes } from './routes/governance.js';
import { computeRoutes } from './routes/compute.js';
import { modelCardRoutes } from './routes/model-cards.js';
import { privacyRoutes } from './routes/privacy.js';
import { secaggRoutes } from './routes/secagg.js';
import { trainerRoutes } from './routes/trainer.js';

export interface ServerOptions {
  store: Store;
  bus: EventBus;
  engine: RoundEngine;
  /** The audit chain (signed with the coordinator's key); routes append to it. */
  audit: AuditLog;
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
  // JSON is parsed from the raw bytes, which are kept: a request signature covers the body exactly as sent.
  const defaultJson = app.getDefaultJsonParser('error', 'error');
  app.addContentTypeParser('application/json', { parseAs: 'buffer', bodyLimit }, (req, body, done) => {
    req.rawBody = body as Buffer;
    defaultJson(req, (body as Buffer).toString('utf8'), done);
  });

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

  const authenticator = new Authenticator(store, now);
  const auth = async (req: FastifyRequest) => {
    req.principal = await authenticator.authenticate(req);
    if (req.principal.kind === 'site') await store.touchSite(req.principal.site.id, now());
  };

  const ctx: RouteContext = { store, bus, engine, audit: opts.audit, now, auth, maxWaitMs: opts.maxWaitMs ?? 25_000, onlineWindowMs: opts.onlineWindowMs ?? 60_000, bodyLimit };
  // @fastify/swagger collects routes through an onRoute hook, so it loads first and the routes are
  // declared inside a plugin that loads after it (routes declared on the root right away would be missed).
  void app.register(registerOpenApi);
  void app.register(async (api) => {
    api.get('/v1/health', async () => ({ ok: true, instance: engine.instanceId, time: now() }));
    siteRoutes(api, ctx);
    agentRoutes(api, ctx);
    studyRoutes(api, ctx);
    userRoutes(api, ctx);
    auditRoutes(api, ctx);
    eventRoutes(api, ctx);
    institutionRoutes(api, ctx);
    governanceRoutes(api, ctx);
    computeRoutes(api, ctx);
    modelCardRoutes(api, ctx);
    privacyRoutes(api, ctx);
    secaggRoutes(api, ctx);
    trainerRoutes(api, ctx);
    await webRoutes(api);
  });
  return app;
}
