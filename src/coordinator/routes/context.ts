/**
 * What every route module receives. Route modules are small Fastify registrations, one per area
 * (sites, agent, studies, …); server.ts wires them together with the shared error handling.
 */
import type { FastifyRequest } from 'fastify';
import type { Store } from '../../store/store.js';
import type { EventBus } from '../events.js';
import type { RoundEngine } from '../engine.js';
import type { AuditLog } from '../../governance/audit-store.js';

export interface RouteContext {
  store: Store;
  bus: EventBus;
  engine: RoundEngine;
  /** The audit chain: `audit.append(fields)`, or `appendAudit(tx, audit.key, fields)` inside a transaction. */
  audit: AuditLog;
  now: () => number;
  /**
   * Name it as a route's `preValidation` to require a signed request: the signature is checked before the body
   * is read (../plugins/signed-requests.ts) and the caller is in `req.principal`; this hook only guards that.
   */
  auth: (req: FastifyRequest) => Promise<void>;
  maxWaitMs: number;
  onlineWindowMs: number;
  bodyLimit: number;
}

// Who may do what lives in one table, governance/roles.ts; routes call authorize/requireUser/requireSite
// from ../auth.js with an action name and then check its scope.
