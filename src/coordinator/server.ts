/**
 * The coordinator's HTTP API. Every route validates its input against a schema from
 * src/protocol/api.ts; every failure becomes a JSON error `{error, message}` with a 4xx status that says
 * what is wrong (5xx: plus `requestId`), and nothing is written before all checks pass. The cross-cutting
 * parts are plugins in ./plugins/: security headers, observability (logs, metrics, probes), the input rule
 * for text, signatures checked before bodies are read, errors and failed-authentication limits.
 */
import Fastify, { LogController, type FastifyInstance, type FastifyPluginAsync, type FastifyRequest } from 'fastify';
import type { Store } from '../store/store.js';
import { AuthError, Authenticator } from './auth.js';
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
import { taskErrorRoutes } from './routes/task-errors.js';
import { createLogger, type Logger } from '../observability/logger.js';
import { AuthFailureLimiter, type AuthLimitOptions } from './plugins/auth-limit.js';
import { errorHandling, frameworkErrors } from './plugins/errors.js';
import { inputRules } from './plugins/input-rules.js';
import { observability, requestId } from './plugins/observability.js';
import { securityHeaders } from './plugins/security.js';
import { signedRequests } from './plugins/signed-requests.js';

export interface ServerOptions {
  store: Store;
  bus: EventBus;
  engine: RoundEngine;
  /** The audit chain (signed with the coordinator's key); routes append to it. */
  audit: AuditLog;
  /** Largest request body accepted from an authenticated caller, bytes (default 64 MiB). */
  bodyLimit?: number;
  /** Largest body of a request not (yet) authenticated, e.g. an enrolment, bytes (default 64 KiB). */
  preAuthBodyLimit?: number;
  /** The data directory, whose free space readiness checks (absent: not checked). */
  dataDir?: string;
  /** Not ready below this many free bytes in dataDir (default 64 MiB). */
  minFreeBytes?: number;
  /** Limits on failed authentication (defaults in plugins/auth-limit.ts). */
  authLimits?: AuthLimitOptions;
  /** Longest long-poll, ms (default 25 s). */
  maxWaitMs?: number;
  /** A site counts as online when seen within this many ms (default 60 s). */
  onlineWindowMs?: number;
  now?: () => number;
  /** The coordinator's logger (src/observability/logger.ts); default: one that writes nothing. */
  logger?: Logger;
  https?: { key: string | Buffer; cert: string | Buffer };
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Every route as declared (method, URL pattern), documented or not: what the fuzzing test walks. */
    routeTable: { method: string; url: string }[];
  }
}

/** A plugin whose hooks and handlers apply to the instance that registers it (what fastify-plugin does). */
function rootPlugin<T>(fn: (app: FastifyInstance, o: T) => void | Promise<void>): FastifyPluginAsync<T & Record<never, never>> {
  const plugin = async (app: FastifyInstance, o: T) => fn(app, o);
  (plugin as unknown as Record<symbol, boolean>)[Symbol.for('skip-override')] = true;
  return plugin as never;
}

/**
 * The plugins load in this order, which is the order their hooks run: security headers first (every answer
 * carries them, refusals included), then observability (request id, request log, metrics, probes), the
 * input rule for path and query text, and signature checking; the API routes last. Errors from any of them
 * reach one error handler (plugins/errors.ts).
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

  const routeTable: { method: string; url: string }[] = [];
  app.decorate('routeTable', routeTable);
  app.addHook('onRoute', (r) => {
    for (const method of [r.method].flat()) if (method !== 'HEAD') routeTable.push({ method, url: r.url });
  });

  const authenticator = new Authenticator(store, now);
  // Authentication itself happens before the body is read (plugins/signed-requests.ts); routes name this
  // hook to say they need it, and it stays as the last guard that a principal is there.
  const auth = async (req: FastifyRequest) => {
    if (!req.principal) throw new AuthError('unauthenticated', 'this route needs a signed request');
  };
  const limiter = new AuthFailureLimiter({ ...(opts.authLimits ?? {}), now });
  errorHandling(app, { limiter });

  // @fastify/swagger collects routes through an onRoute hook, so it loads before any route is declared
  // (the probes in plugins/observability.ts included).
  void app.register(registerOpenApi);
  void app.register(rootPlugin(securityHeaders));
  void app.register(
    rootPlugin((a) => observability(a, { store, bus, now, instanceId: engine.instanceId, ...(opts.dataDir ? { dataDir: opts.dataDir } : {}), ...(opts.minFreeBytes !== undefined ? { minFreeBytes: opts.minFreeBytes } : {}) })),
  );
  void app.register(rootPlugin(inputRules));
  void app.register(
    rootPlugin((a) =>
      signedRequests(a, {
        authenticator,
        authHook: auth,
        bodyLimit,
        preAuthBodyLimit: opts.preAuthBodyLimit ?? 64 * 1024,
        onAuthenticated: async (p) => {
          if (p.kind === 'site') await store.touchSite(p.site.id, now());
        },
      }),
    ),
  );

  const ctx: RouteContext = { store, bus, engine, audit: opts.audit, now, auth, maxWaitMs: opts.maxWaitMs ?? 25_000, onlineWindowMs: opts.onlineWindowMs ?? 60_000, bodyLimit };
  void app.register(async (api) => {
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
    taskErrorRoutes(api, ctx);
    await webRoutes(api);
  });
  return app;
}
