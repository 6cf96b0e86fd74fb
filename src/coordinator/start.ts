/**
 * Starts a coordinator: opens the store (migrating it), loads or makes its own signing key
 * (`<dataDir>/coordinator.key`, signs the audit chain), creates the bootstrap consortium admin on first
 * start (`<dataDir>/admin.key`, mode 600), and serves the API with the round engine running. Used by `setu coordinator start` and embedded
 * by `setu demo` and the tests.
 *
 * Logging is always on: to the logger given (`setu coordinator start` logs to stdout), else to
 * `<dataDir>/coordinator.log` (mode 600), at `logLevel`, else `SETU_LOG_LEVEL`, else info.
 */
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { storeQueryDuration } from '../observability/metrics.js';
import { openStore, type Store } from '../store/store.js';
import { EventBus } from './events.js';
import { RoundEngine } from './engine.js';
import { ensureInstanceId } from './instance.js';
import { buildServer, type ServerOptions } from './server.js';
import { ADMIN_KEY_FILE, ensureBootstrapAdmin, ensureCoordinatorKey, type KeyFile } from './auth.js';
import { AuditLog } from '../governance/audit-store.js';
import { createLogger, type LogLevel, type Logger } from '../observability/logger.js';

export interface CoordinatorOptions {
  /** Directory for the SQLite file, coordinator.key and admin.key (created if missing). */
  dataDir: string;
  /** `postgres://…` to use PostgreSQL instead of `<dataDir>/setu.db`. */
  db?: string;
  /**
   * Model versions' and updates' bytes as files in this directory (default: `<dir of the SQLite file>/blobs`;
   * with PostgreSQL, the shared chunk table unless this is given).
   */
  blobDir?: string;
  host?: string;
  port?: number;
  bodyLimit?: number;
  maxWaitMs?: number;
  /** How often the store is looked at for tasks other coordinators issued (task-wake.ts; default 1 s). */
  taskLookMs?: number;
  tickMs?: number;
  /** How long the round engine's claim on a study lasts without renewal (default 10 s). */
  leaseMs?: number;
  https?: { key: string | Buffer; cert: string | Buffer };
  /** The round engine's progress lines (default: the logger, at info). */
  log?: (msg: string) => void;
  /** Where the coordinator logs (default: `<dataDir>/coordinator.log`). */
  logger?: Logger;
  /** Level of the default logger (default: SETU_LOG_LEVEL, else info). */
  logLevel?: LogLevel;
  /** HTTP-layer settings passed to buildServer (pre-auth body limit, failed-auth limits, free-space floor, bounds on open requests). */
  server?: Pick<ServerOptions, 'preAuthBodyLimit' | 'authLimits' | 'minFreeBytes' | 'limits' | 'uploadChunkBytes'>;
}

export const COORDINATOR_LOG_FILE = 'coordinator.log';
/** Connections the kernel may queue before the coordinator accepts them (see the listen call). */
export const LISTEN_BACKLOG = 4096;

export interface RunningCoordinator {
  url: string;
  /** The bootstrap admin's signing identity, when this data directory holds admin.key. */
  adminKey: KeyFile | undefined;
  audit: AuditLog;
  store: Store;
  bus: EventBus;
  engine: RoundEngine;
  app: FastifyInstance;
  logger: Logger;
  close(): Promise<void>;
}

export { ADMIN_KEY_FILE };

export async function startCoordinator(o: CoordinatorOptions): Promise<RunningCoordinator> {
  const dataDir = resolve(o.dataDir);
  mkdirSync(dataDir, { recursive: true, mode: 0o700 }); // the store, keys and logs are the owner's only
  const logger = o.logger ?? createLogger({ name: 'coordinator', destination: join(dataDir, COORDINATOR_LOG_FILE), ...(o.logLevel ? { level: o.logLevel } : {}) });
  const storeLog = logger.child({ component: 'store' });
  const store = await openStore(o.db ?? join(dataDir, 'setu.db'), {
    onConnectionError: (err) => storeLog.warn({ err }, 'PostgreSQL dropped a connection; the store reconnects on next use'),
    ...(o.blobDir ? { blobDir: o.blobDir } : {}),
    // Statements by kind and time at /metrics: what `setu bench live` counts per round.
    onQuery: (operation, ms) => storeQueryDuration.observe({ operation }, ms / 1000),
  });
  let auditKey, adminKey, instanceId;
  try {
    instanceId = ensureInstanceId(dataDir);
    auditKey = await ensureCoordinatorKey(store, dataDir);
    adminKey = await ensureBootstrapAdmin(store, dataDir, auditKey, Date.now());
  } catch (e) {
    await store.close();
    throw e;
  }
  const audit = new AuditLog(store, auditKey);
  const bus = new EventBus();
  const engineLog = logger.child({ component: 'engine' });
  // The same data directory is the same instance: a restart holds its own leases at once (instance.ts).
  const engine = new RoundEngine(store, bus, {
    audit: auditKey,
    instanceId,
    logger: engineLog,
    ...(o.tickMs ? { tickMs: o.tickMs } : {}),
    ...(o.leaseMs ? { leaseMs: o.leaseMs } : {}),
    log: o.log ?? ((m) => engineLog.info(m)),
  });
  const app = buildServer({
    store,
    bus,
    engine,
    audit,
    logger,
    dataDir,
    ...(o.server ?? {}),
    ...(o.bodyLimit ? { bodyLimit: o.bodyLimit } : {}),
    ...(o.maxWaitMs ? { maxWaitMs: o.maxWaitMs } : {}),
    ...(o.taskLookMs ? { taskLookMs: o.taskLookMs } : {}),
    ...(o.https ? { https: o.https } : {}),
  });
  const host = o.host ?? '127.0.0.1';
  // A deep accept queue: Node's default (511) overflows when a thousand clients connect at once (every site
  // agent reconnecting after an outage, a load test), and the kernel then drops their SYNs, which clients resend
  // only after 1, 3, 7, 15, 31 s: that, not the store, is what left requests hanging for a minute. The kernel
  // caps it at net.core.somaxconn.
  await app.listen({ host, port: o.port ?? 7070, backlog: LISTEN_BACKLOG });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : o.port;
  const url = `${o.https ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`;
  engine.start();
  return {
    url,
    adminKey,
    audit,
    store,
    bus,
    engine,
    app,
    logger,
    async close() {
      await engine.stop();
      await app.close();
      await store.close();
    },
  };
}
