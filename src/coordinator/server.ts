/**
 * The coordinator's HTTP API. Every route validates its input against a schema from
 * src/protocol/api.ts; every failure becomes a JSON error `{error, message}` with a 4xx status that says
 * what is wrong (5xx: plus `requestId`), and nothing is written before all checks pass. The cross-cutting
 * parts are plugins in ./plugins/: security headers, observability (logs, metrics, probes), the input rule
 * for text, signatures checked before bodies are read, errors and failed-authentication limits.
 */
import Fastify, { LogController, type FastifyInstance, type FastifyPluginAsync, type FastifySchema } from 'fastify';
import type { Store } from '../store/store.js';
import { Authenticator, signatureHook } from './auth.js';
import type { AuditLog } from '../governance/audit-store.js';
import { userRoutes } from './routes/users.js';
import { auditRoutes } from './routes/audit.js';
import { EventBus } from './events.js';
import { RoundEngine } from './engine.js';
import { relayPeerEvents } from './peer-events.js';
import type { RouteContext, RoutePlugin } from './routes/context.js';
import { siteRoutes } from './routes/sites.js';
import { uploadRoutes } from './routes/uploads.js';
import { agentRoutes } from './routes/agent.js';
import { studyRoutes } from './routes/studies.js';
import { eventStreamRoutes, eventTokenRoutes } from './routes/events.js';
import { enrolRoutes } from './routes/enrol.js';
import { registerOpenApi, webRoutes } from './routes/web.js';
import { institutionRoutes } from './routes/institutions.js';
import { governanceConfig, governanceRoutes, type GovernanceConfig } from './routes/governance.js';
import { computeRoutes } from './routes/compute.js';
import { modelCardRoutes } from './routes/model-cards.js';
import { privacyRoutes } from './routes/privacy.js';
import { secaggRoutes } from './routes/secagg.js';
import { trainerRoutes } from './routes/trainer.js';
import { analyticsRoutes } from './routes/analytics.js';
import { taskErrorRoutes } from './routes/task-errors.js';
import { createLogger, type Logger } from '../observability/logger.js';
import { AuthFailureLimiter, type AuthLimitOptions } from './plugins/auth-limit.js';
import { errorHandling, frameworkErrors } from './plugins/errors.js';
import { inputRules } from './plugins/input-rules.js';
import { observability, requestId } from './plugins/observability.js';
import { replySerialization } from './plugins/replies.js';
import { securityHeaders } from './plugins/security.js';
import { signedRequests } from './plugins/signed-requests.js';
import { Limits, limitHook, type LimitOptions } from './plugins/limits.js';

export interface ServerOptions {
  store: Store;
  bus: EventBus;
  engine: RoundEngine;
  /** The audit chain (signed with the coordinator's key); routes append to it. */
  audit: AuditLog;
  /** Largest request body accepted from an authenticated caller, bytes (default 64 MiB). */
  bodyLimit?: number;
  /** The largest chunk of a chunked upload of a fit result (routes/uploads.ts; default 8 MiB). */
  uploadChunkBytes?: number;
  /** Largest body of a request not (yet) authenticated, e.g. an enrolment, bytes (default 64 KiB). */
  preAuthBodyLimit?: number;
  /** The data directory, whose free space readiness checks (absent: not checked). */
  dataDir?: string;
  /** Not ready below this many free bytes in dataDir (default 64 MiB). */
  minFreeBytes?: number;
  /** Limits on failed authentication (defaults in plugins/auth-limit.ts). */
  authLimits?: AuthLimitOptions;
  /** Bounds on open long-polls, uploads in flight and event streams (defaults in plugins/limits.ts). */
  limits?: LimitOptions;
  /** Longest long-poll, ms (default 25 s). */
  maxWaitMs?: number;
  /** How often the store is looked at for tasks other coordinators issued (task-wake.ts; default 1 s). */
  taskLookMs?: number;
  /** A site counts as online when seen within this many ms (default 60 s). */
  onlineWindowMs?: number;
  now?: () => number;
  /** Jurisdiction policies and this coordinator's jurisdiction (default: from SETU_POLICIES and SETU_JURISDICTION). */
  governance?: GovernanceConfig;
  /** The coordinator's logger (src/observability/logger.ts); default: one that writes nothing. */
  logger?: Logger;
  https?: { key: string | Buffer; cert: string | Buffer };
  /**
   * A reply that does not match its route's response schema answers 500 instead of being logged (plugins/replies.ts).
   * Default: on under `node --test` (NODE_TEST_CONTEXT, which reaches the coordinators the tests spawn too), so every
   * test that reaches a route also checks what the route documents.
   */
  strictReplies?: boolean;
}

/** A route as declared: method, URL pattern and the schemas it gave (what the fuzzing and schema tests walk). */
export interface RouteEntry {
  method: string;
  url: string;
  schema?: FastifySchema;
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Every route as declared (method, URL pattern), documented or not: what the fuzzing test walks. */
    routeTable: RouteEntry[];
  }
}

/** A plugin whose hooks and handlers apply to the instance that registers it (what fastify-plugin does). */
function rootPlugin<T>(fn: (app: FastifyInstance, o: T) => void | Promise<void>): FastifyPluginAsync<T & Record<never, never>> {
  const plugin = async (app: FastifyInstance, o: T) => fn(app, o);
  (plugin as unknown as Record<symbol, boolean>)[Symbol.for('skip-override')] = true;
  return plugin as never;
}

/** A site's last-seen time is written at most this often per coordinator (it counts as online for 60 s). */
export const SITE_TOUCH_EVERY_MS = 5_000;

/**
 * Records that a site was seen, at most once per SITE_TOUCH_EVERY_MS per site. Every signed request of a site used
 * to UPDATE its row: a burst of polls from one site then queued on that row's lock, each commit waiting for the one
 * before, and held the pool's connections while they waited (the PostgreSQL stall under load). And the sites due in
 * the same turn of the event loop are written by one statement (Store.touchSites): one UPDATE per site was two of a
 * tiny site's 24 statements a round at 1,000 sites (`setu bench live`, SETU_SQL_TRACE). The request still waits for
 * its write, so a site is online once its first request is answered.
 */
export function siteTouches(store: Store, now: () => number): (siteId: string) => Promise<void> {
  const last = new Map<string, number>();
  let batch: { ids: Set<string>; done: Promise<void> } | undefined;
  const flush = async (ids: Set<string>): Promise<void> => {
    batch = undefined;
    try {
      await store.touchSites([...ids], now());
    } catch (e) {
      for (const id of ids) last.delete(id);
      throw e;
    }
  };
  return async (siteId) => {
    const t = now();
    const prev = last.get(siteId);
    if (prev !== undefined && t - prev < SITE_TOUCH_EVERY_MS && t >= prev) return;
    last.set(siteId, t);
    if (!batch) {
      const ids = new Set<string>();
      batch = { ids, done: new Promise<void>((resolve) => setImmediate(resolve)).then(() => flush(ids)) };
    }
    batch.ids.add(siteId);
    await batch.done;
  };
}

/** Every route that needs a signed request: registered inside the one authenticated scope. */
const SIGNED_ROUTES: RoutePlugin[] = [
  siteRoutes, agentRoutes, studyRoutes, userRoutes, auditRoutes, eventTokenRoutes, institutionRoutes, governanceRoutes,
  computeRoutes, modelCardRoutes, privacyRoutes, secaggRoutes, trainerRoutes, taskErrorRoutes, analyticsRoutes, uploadRoutes,
];
/** The routes anyone may call: enrolment (the caller has no key yet) and the event stream (its token is the credential). */
const PUBLIC_ROUTES: RoutePlugin[] = [enrolRoutes, eventStreamRoutes];

/**
 * The plugins load in this order, which is the order their hooks run: security headers first (every answer
 * carries them, refusals included), then observability (request id, request log, metrics, probes), the
 * input rule for path and query text, and the body rules of signed requests; then the routes: the public
 * ones, and the signed ones inside one scope whose `onRequest` hook authenticates every request before its
 * body is read. Errors from any of them reach one error handler (plugins/errors.ts).
 */
export function buildServer(opts: ServerOptions): FastifyInstance {
  const { store, bus, engine } = opts;
  const now = opts.now ?? Date.now;
  const bodyLimit = opts.bodyLimit ?? 64 * 1024 * 1024;
  const app = Fastify({
    loggerInstance: opts.logger ?? createLogger({ level: 'silent' }),
    // One log line per answered request comes from plugins/observability.ts, with the caller and route.
    logController: new LogController({ disableRequestLogging: true }),
    genReqId: requestId,
    frameworkErrors,
    bodyLimit,
    ajv: { customOptions: { allErrors: false, coerceTypes: false, removeAdditional: false } },
    ...(opts.https ? { https: opts.https } : {}),
  } as never) as unknown as FastifyInstance;

  const routeTable: RouteEntry[] = [];
  app.decorate('routeTable', routeTable);
  app.addHook('onRoute', (r) => {
    for (const method of [r.method].flat()) if (method !== 'HEAD') routeTable.push({ method, url: r.url, ...(r.schema ? { schema: r.schema } : {}) });
  });

  const limiter = new AuthFailureLimiter({ ...(opts.authLimits ?? {}), now });
  errorHandling(app, { limiter });

  // @fastify/swagger collects routes through an onRoute hook, so it loads before any route is declared
  // (the probes in plugins/observability.ts included).
  void app.register(registerOpenApi);
  void app.register(rootPlugin((a) => replySerialization(a, { strict: opts.strictReplies ?? process.env.NODE_TEST_CONTEXT !== undefined })));
  void app.register(rootPlugin(securityHeaders));
  void app.register(
    rootPlugin((a) => observability(a, { store, bus, now, instanceId: engine.instanceId, ...(opts.dataDir ? { dataDir: opts.dataDir } : {}), ...(opts.minFreeBytes !== undefined ? { minFreeBytes: opts.minFreeBytes } : {}) })),
  );
  void app.register(rootPlugin(inputRules));
  void app.register(rootPlugin((a) => signedRequests(a, { bodyLimit, preAuthBodyLimit: opts.preAuthBodyLimit ?? 64 * 1024 })));

  const ctx: RouteContext = {
    store, bus, engine, audit: opts.audit, now, governance: opts.governance ?? governanceConfig(),
    maxWaitMs: opts.maxWaitMs ?? 25_000, ...(opts.taskLookMs ? { taskLookMs: opts.taskLookMs } : {}), onlineWindowMs: opts.onlineWindowMs ?? 60_000, bodyLimit,
    ...(opts.uploadChunkBytes ? { uploadChunkBytes: opts.uploadChunkBytes } : {}),
    limits: new Limits(opts.limits),
  };
  app.decorate('limits', ctx.limits);
  for (const routes of PUBLIC_ROUTES) void app.register(routes, ctx);
  const authenticator = new Authenticator(store, now);
  // A revoked, re-keyed or re-linked caller is looked up again at its next request (the store refuses it anyway).
  const forget = bus.on((e) => e.type === 'identity.changed' && authenticator.forget(e.id));
  app.addHook('onClose', async () => forget());
  // With other coordinators on the same PostgreSQL, their live events on this bus and this one's on theirs.
  const unrelay = relayPeerEvents(bus, store.peers);
  app.addHook('onClose', async () => unrelay());
  const touch = siteTouches(store, now);
  void app.register(async (signed) => {
    signed.addHook('onRequest', signatureHook(authenticator, async (p) => {
      if (p.kind === 'site') await touch(p.site.id);
    }));
    // After authentication, before any body is read: long-polls and uploads take their slot or are refused.
    signed.addHook('onRequest', limitHook(ctx.limits, { bodyLimit, store, bus }));
    for (const routes of SIGNED_ROUTES) await signed.register(routes, ctx);
  });
  void app.register(async (web) => webRoutes(web));
  return app;
}
