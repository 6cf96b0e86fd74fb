/**
 * Enrolment and the site registry. An admin issues a one-time, expiring invite; the site redeems it once
 * with the Ed25519 public key it generated (and the cohort size it holds per dataset), and signs every
 * later request with that key under key id = its site id. Each step is audited in its own transaction.
 */
import type { RoutePlugin } from './context.js';
import { CohortsRequestSchema, InviteRequestSchema, InviteResponseSchema, type CohortsRequest, type InviteRequest } from '../../protocol/api.js';
import { CohortsReply, IdParams, NoBody, NoQuery, RevokedReply } from '../../protocol/replies.js';
import { Type } from '@sinclair/typebox';
import { SiteViewSchema } from '../../protocol/views.js';
import { HttpError, newSecret, requireSite, requireUser, sha256hex } from '../auth.js';
import { appendAudit } from '../../governance/audit-store.js';
import { declaredTrainer } from './trainer.js';

export const siteRoutes: RoutePlugin = async (app, ctx) => {
  const { store, bus, now, audit } = ctx;

  app.post<{ Body: InviteRequest }>('/v1/invites', { schema: { querystring: NoQuery, body: InviteRequestSchema, response: { 200: InviteResponseSchema } } }, async (req) => {
    const user = requireUser(req.principal!, 'invite.create');
    const b = req.body;
    // A site admin invites sites of their own institution only.
    if (user.scope === 'own-institution' && (user.institution === null || (b.institution !== undefined && b.institution !== user.institution))) {
      throw new HttpError(403, 'forbidden', `a site admin may invite sites of their own institution (${user.institution ?? 'none'}) only`);
    }
    const institution = user.scope === 'own-institution' ? user.institution : (b.institution ?? null);
    if (await store.getSiteByName(b.siteName)) throw new HttpError(409, 'conflict', `a site named ${b.siteName} is already enrolled`);
    const token = `inv_${newSecret()}`;
    const t = now();
    // Whole milliseconds: a fractional ttlHours must not reach an integer column (PostgreSQL refuses it).
    const expiresAt = t + Math.round((b.ttlHours ?? 72) * 3600_000);
    await store.transaction(async (tx) => {
      await tx.createInvite({ token_hash: sha256hex(token), site_name: b.siteName, institution, jurisdiction: b.jurisdiction ?? null, created_by: user.id, created_at: t, expires_at: expiresAt, used_at: null, site_id: null });
      await appendAudit(tx, audit.key, { ts: t, actor: user.id, kind: 'invite.issued', subject: b.siteName, data: { for: 'site', institution, jurisdiction: b.jurisdiction ?? null, expiresAt } });
    });
    return { token, siteName: b.siteName, expiresAt };
  });

  // A site declares (or updates) how many training examples it holds per dataset; results claiming more are refused.
  // It is part of the site submitting plausible updates, hence the update.submit action.
  app.put<{ Body: CohortsRequest }>('/v1/agent/cohorts', { schema: { querystring: NoQuery, body: CohortsRequestSchema, response: { 200: CohortsReply } } }, async (req) => {
    const site = requireSite(req.principal!, 'update.submit');
    // A change is audited in the same transaction (an agent re-declaring the same sizes at each start adds nothing). A
    // raise counts only for studies that start later: running studies keep the sizes frozen at their start.
    await store.transaction(async (tx) => {
      const t = now();
      const before = new Map(Object.entries(await tx.listCohorts(site.id))); // dataset names come from outside: a Map
      const changed = Object.entries(req.body.cohorts).filter(([d, n]) => before.get(d) !== n);
      if (changed.length === 0) return;
      await tx.declareCohorts(site.id, req.body.cohorts, t);
      await appendAudit(tx, audit.key, {
        ts: t, actor: site.id, kind: 'site.cohorts_declared', subject: site.id,
        data: { name: site.name, changes: changed.map(([dataset, size]) => ({ dataset, before: before.get(dataset) ?? null, after: size })) },
      });
    });
    return { siteId: site.id, cohorts: await store.listCohorts(site.id) };
  });

  app.get('/v1/sites', { schema: { querystring: NoQuery, response: { 200: Type.Array(SiteViewSchema) } } }, async (req) => {
    requireUser(req.principal!, 'consortium.view');
    const window = ctx.onlineWindowMs ?? 60_000;
    const sites = await store.listSites();
    const trainers = await Promise.all(sites.map((s) => declaredTrainer(store, s.id)));
    // A site belonging to an institution answers for its institution's name and jurisdiction (governance).
    const member = new Map((await store.listMemberships()).map((m) => [m.id, m]));
    return sites.map((s, i) => ({
      id: s.id,
      name: s.name,
      institution: member.get(s.id)?.institution ?? s.institution,
      jurisdiction: member.get(s.id)?.jurisdiction ?? s.jurisdiction,
      status: s.status,
      createdAt: s.created_at,
      lastSeenAt: s.last_seen_at,
      online: s.status === 'active' && s.last_seen_at !== null && now() - s.last_seen_at < window,
      trainer: trainers[i] ?? null,
    }));
  });

  app.post<{ Params: { id: string } }>('/v1/sites/:id/revoke', { schema: { params: IdParams, querystring: NoQuery, body: NoBody, response: { 200: RevokedReply } } }, async (req) => {
    const user = requireUser(req.principal!, 'site.revoke');
    const site = (await store.getSite(req.params.id)) ?? (await store.getSiteByName(req.params.id));
    if (!site) throw new HttpError(404, 'not_found', `no site ${req.params.id}`);
    if (user.scope === 'own-institution') {
      // A linked site's row holds its institution's name and id; a site admin's invite names either. Compare both
      // (comparing the name with the id refused a site admin their own institution's linked sites).
      const m = (await store.listMemberships()).find((x) => x.id === site.id);
      const theirs = [m?.institutionId, m?.institution, site.institution].filter((x): x is string => !!x);
      if (user.institution === null || !theirs.includes(user.institution)) {
        throw new HttpError(403, 'forbidden', `a site admin may revoke sites of their own institution (${user.institution ?? 'none'}) only; site ${site.name} belongs to ${theirs[0] ?? 'no institution'}`);
      }
    }
    const t = now();
    const done = await store.transaction(async (tx) => {
      if (!(await tx.revokeSite(site.id))) return false;
      await appendAudit(tx, audit.key, { ts: t, actor: user.id, kind: 'site.revoked', subject: site.id, data: { name: site.name } });
      return true;
    });
    if (!done) throw new HttpError(409, 'conflict', `site ${site.name} is already revoked`);
    bus.emit({ type: 'identity.changed', id: site.id });
    return { id: site.id, name: site.name, status: 'revoked' };
  });
}
