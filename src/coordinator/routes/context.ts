/**
 * What every route plugin receives. Each file in this folder is a Fastify plugin for one area (sites, agent,
 * studies, …), registered by server.ts with this context as its options: the public ones (enrolment, the event
 * stream, the dashboard) at the root, the rest inside the one authenticated scope, whose single hook
 * (../auth.ts `signatureHook`) has put the verified caller in `req.principal` before any handler runs.
 */
import type { FastifyPluginAsync } from 'fastify';
import type { Store } from '../../store/store.js';
import type { EventBus } from '../events.js';
import type { RoundEngine } from '../engine.js';
import type { AuditLog } from '../../governance/audit-store.js';
import type { GovernanceConfig } from './governance.js';
import type { Limits } from '../plugins/limits.js';

export interface RouteContext {
  store: Store;
  bus: EventBus;
  engine: RoundEngine;
  /** The audit chain: `audit.append(fields)`, or `appendAudit(tx, audit.key, fields)` inside a transaction. */
  audit: AuditLog;
  now: () => number;
  /** Where the jurisdiction policies are and where this coordinator stands (read once, at start). */
  governance: GovernanceConfig;
  maxWaitMs: number;
  /** How often the store is looked at for tasks other coordinators issued (task-wake.ts; default 1 s). */
  taskLookMs?: number;
  onlineWindowMs: number;
  bodyLimit: number;
  /** The largest chunk of a chunked upload (routes/uploads.ts; default UPLOAD_CHUNK_BYTES, at most bodyLimit). */
  uploadChunkBytes?: number;
  /** The bounds on what callers hold open (../plugins/limits.ts): the event stream takes its slot here. */
  limits: Limits;
}

/** A route module: registered with `app.register(plugin, ctx)`. */
export type RoutePlugin = FastifyPluginAsync<RouteContext>;

// Who may do what lives in one table, governance/roles.ts; routes call authorize/requireUser/requireSite
// from ../auth.js with an action name and then check its scope.
