/**
 * What an operator sees of the HTTP layer:
 *  - a request id per request (the caller's `X-Request-Id` when it is a sane token, else a fresh UUID), on
 *    every log line of the request (`reqId`), in the `X-Request-Id` answer header and in every 5xx body;
 *  - one log line per answered request (method, URL with secret query values redacted, route, status,
 *    duration, caller), `debug` for the probes and `info` for the rest;
 *  - Prometheus metrics at `GET /metrics` (src/observability/metrics.ts): requests by route and status,
 *    latencies, open event streams, failed authentications, agent last-seen (read from the store at scrape
 *    time, so every coordinator sharing the store reports every agent), and rounds, tasks and refusals
 *    counted from the round engine's bus;
 *  - `GET /healthz` (liveness: the process answers) and `GET /readyz` = `GET /v1/health` (readiness: the store
 *    answers a real write and read within a few seconds and the data directory has room); 503 otherwise, so a
 *    load balancer stops sending traffic to a coordinator whose database is gone or whose disk is full.
 */
import { randomUUID } from 'node:crypto';
import { statfs } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { Type } from '@sinclair/typebox';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Store } from '../../store/store.js';
import type { EventBus } from '../events.js';
import { agentLastSeen, httpDuration, httpRequests, refusals, registry, rounds, storeReady, tasks } from '../../observability/metrics.js';
import type { ErrorBody } from './errors.js';
import { NoQuery, TextReply } from '../../protocol/replies.js';

const REQUEST_ID_RE = /^[A-Za-z0-9._:-]{8,128}$/;

/** Fastify's `genReqId`: keep a load balancer's id so its logs and ours line up; never trust anything else. */
export function requestId(req: IncomingMessage): string {
  const given = req.headers['x-request-id'];
  return typeof given === 'string' && REQUEST_ID_RE.test(given) ? given : randomUUID();
}

export interface ReadinessOptions {
  store: Store;
  /** Checked for free space; absent for a server built without a data directory (tests). */
  dataDir?: string;
  /** Not ready below this many free bytes on the data directory's file system (default 64 MiB). */
  minFreeBytes?: number;
  /** A store probe slower than this counts as a failure (default 3 s). */
  timeoutMs?: number;
  now: () => number;
  instanceId: string;
}

/** Why the coordinator cannot serve now, or undefined when it can: the store takes a write and a read, and the disk has room. */
export async function notReadyReason(o: ReadinessOptions): Promise<string | undefined> {
  const timeoutMs = o.timeoutMs ?? 3000;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<string>((resolve) => {
    timer = setTimeout(() => resolve(`the store did not answer within ${timeoutMs} ms`), timeoutMs);
  });
  const probe = (async () => {
    try {
      await o.store.setKv('readiness_probe', `${o.instanceId} ${o.now()}`);
      await o.store.getKv('readiness_probe');
      return undefined;
    } catch (e) {
      return `the store failed a write and read: ${(e as Error).message}`;
    }
  })();
  try {
    const storeProblem = await Promise.race([probe, timeout]);
    if (storeProblem) return storeProblem;
  } finally {
    clearTimeout(timer);
  }
  if (o.dataDir !== undefined) {
    const minFree = o.minFreeBytes ?? 64 * 1024 * 1024;
    try {
      const s = await statfs(o.dataDir);
      const free = s.bavail * s.bsize;
      if (free < minFree) return `the data directory ${o.dataDir} has ${Math.floor(free / 1024)} KiB free (at least ${Math.floor(minFree / 1024)} KiB needed)`;
    } catch (e) {
      return `the data directory ${o.dataDir} cannot be examined: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`;
    }
  }
  return undefined;
}

const PROBES = new Set(['/healthz', '/readyz', '/v1/health', '/metrics']);

export interface ObservabilityOptions extends ReadinessOptions {
  bus: EventBus;
}

const routeOf = (req: FastifyRequest) => req.routeOptions.url ?? 'unmatched';

export function observability(app: FastifyInstance, o: ObservabilityOptions): void {
  app.addHook('onRequest', async (req, reply) => {
    // On the raw response too, so a hijacked answer (the event stream) carries it.
    reply.raw.setHeader('x-request-id', String(req.id));
  });

  app.addHook('onResponse', async (req, reply) => {
    const route = routeOf(req);
    const seconds = reply.elapsedTime / 1000;
    httpRequests.inc({ method: req.method, route, status: String(reply.statusCode) });
    httpDuration.observe({ method: req.method, route }, seconds);
    const line = { req, route, status: reply.statusCode, ms: Math.round(reply.elapsedTime * 10) / 10, ...(req.principal ? { caller: req.principal.id } : {}) };
    if (PROBES.has(route)) req.log.debug(line, 'request');
    else req.log.info(line, 'request');
  });

  // Rounds, tasks and refusals from the engine's bus (the engine increments them itself in wave 2).
  o.bus.on((e) => {
    // Another coordinator's event is counted by that coordinator (peer-events.ts).
    if (o.bus.fromPeer(e)) return;
    if (e.type === 'round.opened') rounds.inc({ event: 'opened', kind: e.kind });
    else if (e.type === 'round.committed') rounds.inc({ event: 'committed', kind: e.kind });
    else if (e.type === 'update.accepted') tasks.inc({ outcome: 'accepted' });
    else if (e.type === 'update.refused') {
      tasks.inc({ outcome: 'refused' });
      refusals.inc();
    } else if (e.type === 'task.failed') tasks.inc({ outcome: 'failed' });
  });

  const ready = async (req: FastifyRequest) => {
    const reason = await notReadyReason(o);
    storeReady.set(reason ? 0 : 1);
    if (reason) req.log.warn({ reason }, 'not ready');
    return reason;
  };
  const Health = Type.Object({ ok: Type.Literal(true), instance: Type.String(), time: Type.Number() });
  const Unavailable = Type.Object({ error: Type.String(), message: Type.String(), requestId: Type.String() });
  const readiness = {
    schema: { summary: 'Readiness: 200 when the store takes a write and a read and the disk has room, else 503', querystring: NoQuery, response: { 200: Health, 503: Unavailable } },
  };
  const readyHandler = async (req: FastifyRequest, reply: import('fastify').FastifyReply) => {
    const reason = await ready(req);
    if (reason) {
      reply.header('retry-after', '5');
      return reply.status(503).send({ error: 'not_ready', message: reason, requestId: String(req.id) } satisfies ErrorBody);
    }
    return { ok: true as const, instance: o.instanceId, time: o.now() };
  };
  app.get('/v1/health', readiness, readyHandler);
  app.get('/readyz', readiness, readyHandler);
  app.get('/healthz', { schema: { summary: 'Liveness: the process answers (no store access)', querystring: NoQuery, response: { 200: Type.Object({ ok: Type.Literal(true) }) } } }, async () => ({ ok: true as const }));

  app.get('/metrics', { schema: { summary: 'Prometheus metrics (text exposition format)', querystring: NoQuery, response: { 200: { content: { 'text/plain': { schema: TextReply('Prometheus text exposition format') } } } } } }, async (_req, reply) => {
    try {
      agentLastSeen.reset();
      for (const s of await o.store.listSites()) if (s.last_seen_at !== null) agentLastSeen.set({ site: s.id }, s.last_seen_at / 1000);
    } catch {
      // The store being down must not hide the other metrics (setu_store_ready says so).
    }
    return reply.type(registry.contentType).send(await registry.metrics());
  });
}
