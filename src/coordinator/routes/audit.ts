/**
 * The audit chain over HTTP, for auditors and consortium admins only (a study lead gets 403).
 *   GET /v1/audit?after=N&limit=M  entries in seq order, with the coordinator's public key and the stored head
 *   GET /v1/audit/verify           the coordinator's own check of every hash, signature and link
 *   GET /v1/audit/export           JSON Lines for an external auditor (audit-chain.ts exportChain)
 * `setu audit verify` does not trust /verify: it fetches the entries and recomputes everything itself.
 */
import type { RoutePlugin } from './context.js';
import { requireUser } from '../auth.js';
import { AuditPageSchema, AuditQuery, ChainVerdictSchema, NoQuery, TextReply } from '../../protocol/replies.js';

export const auditRoutes: RoutePlugin = async (app, ctx) => {
  const { audit } = ctx;

  app.get<{ Querystring: { after?: string; limit?: string } }>('/v1/audit', { schema: { querystring: AuditQuery, response: { 200: AuditPageSchema } } }, async (req) => {
    requireUser(req.principal!, 'audit.view');
    const head = await audit.head();
    const entries = await audit.entries({
      ...(req.query.after !== undefined ? { after: Number(req.query.after) } : {}),
      ...(req.query.limit !== undefined ? { limit: Number(req.query.limit) } : {}),
    });
    return { publicKey: audit.key.publicKeyRaw, count: head.count, head: head.head, entries };
  });

  app.get('/v1/audit/verify', { schema: { querystring: NoQuery, response: { 200: ChainVerdictSchema } } }, async (req) => {
    requireUser(req.principal!, 'audit.view');
    return audit.verify();
  });

  app.get('/v1/audit/export', { schema: { querystring: NoQuery, response: { 200: { content: { 'application/x-ndjson': { schema: TextReply('JSON Lines: a header, then every entry (governance/audit-chain.ts exportChain)') } } } } } }, async (req, reply) => {
    requireUser(req.principal!, 'audit.export');
    return reply.type('application/x-ndjson').send(await audit.export(ctx.now()));
  });
}
