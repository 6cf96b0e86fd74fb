/**
 * The audit chain over HTTP, for auditors and consortium admins only (a study lead gets 403).
 *   GET /v1/audit?after=N&limit=M  one page of entries in seq order (entries with seq > after, at most limit: 1000 by
 *                                  default, 10000 at most), with the coordinator's public key, the stored head, a
 *                                  signed checkpoint of it, and `next` (the `after` of the next page, null at the end)
 *   GET /v1/audit/checkpoint       the head as a signed checkpoint (protocol/audit-checkpoint.ts), for a witness
 *   GET /v1/audit/verify           the coordinator's own check of every hash, signature and link
 *   GET /v1/audit/export           JSON Lines for an external auditor (audit-chain.ts exportChain)
 * `setu audit verify` does not trust /verify: it fetches the entries and recomputes everything itself.
 */
import type { RoutePlugin } from './context.js';
import { Type } from '@sinclair/typebox';
import { HttpError, requireUser } from '../auth.js';
import { AuditCheckpointSchema } from '../../protocol/audit-checkpoint.js';
import { AuditQuery, ChainVerdictSchema, NoQuery, TextReply } from '../../protocol/replies.js';

/** Pages of the log: an unasked-for request never returns the whole of a long chain. */
export const AUDIT_PAGE_DEFAULT = 1000;
export const AUDIT_PAGE_MAX = 10_000;

const Hex64 = Type.String({ pattern: '^[0-9a-f]{64}$' });
const AuditEntrySchema = Type.Object({
  seq: Type.Integer(), ts: Type.Integer(), actor: Type.String(), kind: Type.String(), subject: Type.String(),
  data: Type.Unknown(), prevHash: Type.String(), hash: Type.String(), sig: Type.String(),
});
const AuditPageSchema = Type.Object({
  publicKey: Type.String(), count: Type.Integer(), head: Hex64, checkpoint: AuditCheckpointSchema,
  entries: Type.Array(AuditEntrySchema),
  /** The `after` of the next page; null when this page ends the log. */
  next: Type.Union([Type.Integer(), Type.Null()]),
});

export const auditRoutes: RoutePlugin = async (app, ctx) => {
  const { audit } = ctx;

  app.get<{ Querystring: { after?: string; limit?: string } }>('/v1/audit', { schema: { querystring: AuditQuery, response: { 200: AuditPageSchema } } }, async (req) => {
    requireUser(req.principal!, 'audit.view');
    const limit = req.query.limit === undefined ? AUDIT_PAGE_DEFAULT : Number(req.query.limit);
    if (limit < 1 || limit > AUDIT_PAGE_MAX) throw new HttpError(400, 'invalid_query', `limit must be between 1 and ${AUDIT_PAGE_MAX}, not ${req.query.limit}`);
    const after = req.query.after === undefined ? 0 : Number(req.query.after);
    // The checkpoint is signed over the head read first, so every entry up to its count is in this or a later page.
    const checkpoint = await audit.checkpoint(ctx.now());
    const entries = await audit.entries({ after, limit });
    const last = entries.at(-1)?.seq;
    const next = entries.length === limit && last !== undefined ? last : null;
    return { publicKey: audit.key.publicKeyRaw, count: checkpoint.count, head: checkpoint.head, checkpoint, entries, next };
  });

  app.get('/v1/audit/checkpoint', { schema: { querystring: NoQuery, response: { 200: AuditCheckpointSchema } } }, async (req) => {
    requireUser(req.principal!, 'audit.view');
    return audit.checkpoint(ctx.now());
  });

  app.get('/v1/audit/verify', { schema: { querystring: NoQuery, response: { 200: ChainVerdictSchema } } }, async (req) => {
    requireUser(req.principal!, 'audit.view');
    return audit.verify();
  });

  app.get('/v1/audit/export', { schema: { querystring: NoQuery, response: { 200: { content: { 'application/x-ndjson': { schema: TextReply('JSON Lines: a signed header, then every entry (governance/audit-chain.ts exportChain)') } } } } } }, async (req, reply) => {
    requireUser(req.principal!, 'audit.export');
    return reply.type('application/x-ndjson').send(await audit.export(ctx.now()));
  });
}
