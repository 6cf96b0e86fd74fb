/**
 * What every route module receives. Route modules are small Fastify registrations, one per area
 * (sites, agent, studies, …); server.ts wires them together with the shared error handling.
 */
import type { FastifyRequest } from 'fastify';
import type { Store } from '../../store/store.js';
import type { EventBus } from '../events.js';
import type { RoundEngine } from '../engine.js';

export interface RouteContext {
  store: Store;
  bus: EventBus;
  engine: RoundEngine;
  now: () => number;
  /** preHandler that authenticates the caller into `req.principal`. */
  auth: (req: FastifyRequest) => Promise<void>;
  maxWaitMs: number;
  onlineWindowMs: number;
  bodyLimit: number;
}

export const ADMIN_ROLES = ['consortium_admin'];
export const STUDY_ROLES = ['consortium_admin', 'study_lead'];
export const READ_ROLES = ['consortium_admin', 'study_lead', 'site_admin', 'auditor'];
