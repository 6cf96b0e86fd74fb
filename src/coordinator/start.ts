/**
 * Starts a coordinator: opens the store (migrating it), provisions the admin token on first start,
 * and serves the API with the round engine running. Used by `setu coordinator start` and embedded
 * by `setu demo` and the tests.
 */
import { mkdirSync, writeFileSync, existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Store } from '../store/store.js';
import { EventBus } from './events.js';
import { RoundEngine } from './engine.js';
import { buildServer } from './server.js';
import { ensureAdminToken } from './auth.js';

export interface CoordinatorOptions {
  /** Directory for the SQLite file and the admin token (created if missing). */
  dataDir: string;
  /** `postgres://…` to use PostgreSQL instead of `<dataDir>/setu.db`. */
  db?: string;
  host?: string;
  port?: number;
  bodyLimit?: number;
  maxWaitMs?: number;
  tickMs?: number;
  /** Set the admin token instead of generating one (tests, scripted deployments). */
  adminToken?: string;
  https?: { key: string | Buffer; cert: string | Buffer };
  log?: (msg: string) => void;
}

export interface RunningCoordinator {
  url: string;
  adminToken: string;
  store: Store;
  bus: EventBus;
  engine: RoundEngine;
  app: FastifyInstance;
  close(): Promise<void>;
}

export const ADMIN_TOKEN_FILE = 'admin.token';

export async function startCoordinator(o: CoordinatorOptions): Promise<RunningCoordinator> {
  const dataDir = resolve(o.dataDir);
  mkdirSync(dataDir, { recursive: true });
  const store = await Store.open(o.db ?? join(dataDir, 'setu.db'));
  const tokenFile = join(dataDir, ADMIN_TOKEN_FILE);
  const fresh = await ensureAdminToken(store, o.adminToken);
  if (fresh) writeFileSync(tokenFile, fresh + '\n', { mode: 0o600 });
  if (!existsSync(tokenFile)) throw new Error(`the admin token file ${tokenFile} is missing; start with --admin-token to set a new one`);
  const adminToken = readFileSync(tokenFile, 'utf8').trim();
  const bus = new EventBus();
  const engine = new RoundEngine(store, bus, { ...(o.tickMs ? { tickMs: o.tickMs } : {}), ...(o.log ? { log: o.log } : {}) });
  const app = buildServer({ store, bus, engine, ...(o.bodyLimit ? { bodyLimit: o.bodyLimit } : {}), ...(o.maxWaitMs ? { maxWaitMs: o.maxWaitMs } : {}), ...(o.https ? { https: o.https } : {}) });
  const host = o.host ?? '127.0.0.1';
  await app.listen({ host, port: o.port ?? 7070 });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : o.port;
  const url = `${o.https ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`;
  engine.start();
  return {
    url,
    adminToken,
    store,
    bus,
    engine,
    app,
    async close() {
      await engine.stop();
      await app.close();
      await store.close();
    },
  };
}
