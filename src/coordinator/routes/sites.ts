/** Enrolment (invites, one-time tokens) and the site registry. */
import type { FastifyInstance } from 'fastify';
import type { RouteContext } from './context.js';
import { randomBytes } from 'node:crypto';
import { EnrolRequestSchema, InviteRequestSchema, type EnrolRequest, type InviteRequest } from '../../protocol/api.js';
import { HttpError, newSecret, requireUser, sha256hex } from '../auth.js';
import { ADMIN_ROLES, READ_ROLES } from './context.js';

export function siteRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const { store, bus, engine, now, auth } = ctx;
  // ---- enrolment ----
  app.post<{ Body: InviteRequest }>('/v1/invites', { schema: { body: InviteRequestSchema }, preValidation: auth }, async (req) => {
    requireUser(req.principal!, ADMIN_ROLES);
    const b = req.body;
    if (await store.getSiteByName(b.siteName)) throw new HttpError(409, 'conflict', `a site named ${b.siteName} is already enrolled`);
    const token = `inv_${newSecret()}`;
    const expiresAt = now() + (b.ttlHours ?? 72) * 3600_000;
    await store.createInvite({
      token_hash: sha256hex(token),
      site_name: b.siteName,
      institution: b.institution ?? null,
      jurisdiction: b.jurisdiction ?? null,
      created_by: (req.principal as { id: string }).id,
      created_at: now(),
      expires_at: expiresAt,
      used_at: null,
      site_id: null,
    });
    return { token, siteName: b.siteName, expiresAt };
  });

  app.post<{ Body: EnrolRequest }>('/v1/enrol', { schema: { body: EnrolRequestSchema } }, async (req) => {
    const credential = `site_${newSecret()}`;
    const siteId = `site-${randomBytes(6).toString('hex')}`;
    const tokenHash = sha256hex(req.body.token);
    const invite = await store.transaction(async (tx) => {
      const inv = await store.consumeInvite(tokenHash, now(), tx);
      if (!inv) return undefined;
      await store.createSite(
        {
          id: siteId,
          name: inv.site_name,
          institution: inv.institution,
          jurisdiction: inv.jurisdiction,
          credential_hash: sha256hex(credential),
          public_key: req.body.publicKey ?? null,
          status: 'active',
          created_at: now(),
          last_seen_at: now(),
        },
        tx,
      );
      await store.attachInviteToSite(tokenHash, siteId, tx);
      return inv;
    });
    if (!invite) throw new HttpError(401, 'invalid_invite', 'the invite token is unknown, already used or expired');
    return { siteId, siteName: invite.site_name, credential };
  });

  app.get('/v1/sites', { preValidation: auth }, async (req) => {
    requireUser(req.principal!, READ_ROLES);
    const window = ctx.onlineWindowMs ?? 60_000;
    return (await store.listSites()).map((s) => ({
      id: s.id,
      name: s.name,
      institution: s.institution,
      jurisdiction: s.jurisdiction,
      status: s.status,
      createdAt: s.created_at,
      lastSeenAt: s.last_seen_at,
      online: s.status === 'active' && s.last_seen_at !== null && now() - s.last_seen_at < window,
    }));
  });

  app.post<{ Params: { id: string } }>('/v1/sites/:id/revoke', { preValidation: auth }, async (req) => {
    requireUser(req.principal!, ADMIN_ROLES);
    if (!(await store.setSiteStatus(req.params.id, 'revoked'))) throw new HttpError(404, 'not_found', `no site ${req.params.id}`);
    return { id: req.params.id, status: 'revoked' };
  });

}
