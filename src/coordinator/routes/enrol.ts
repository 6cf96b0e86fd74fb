/**
 * Enrolment: the only routes besides the probes and the dashboard that take unsigned requests, since the
 * caller has no registered key yet. A site redeems its one-time invite with the Ed25519 public key it made
 * (and the cohort size it holds per dataset) and signs every later request with it under key id = its site
 * id; a user redeems theirs (`setu user enrol`) the same way under key id = their user id. Each redemption
 * is atomic (a second use of the token finds nothing) and audited in the same transaction. The invites are
 * issued by signed routes: sites.ts (POST /v1/invites) and users.ts (POST /v1/users).
 */
import { randomBytes } from 'node:crypto';
import type { RoutePlugin } from './context.js';
import { EnrolRequestSchema, EnrolResponseSchema, UserEnrolRequestSchema, UserEnrolResponseSchema, type EnrolRequest, type UserEnrolRequest } from '../../protocol/api.js';
import { NoQuery } from '../../protocol/replies.js';
import { importPublicKey } from '../../protocol/signing.js';
import { HttpError, sha256hex } from '../auth.js';
import { appendAudit } from '../../governance/audit-store.js';

/** Refuses (400) a public key that is not a raw Ed25519 key. */
export function checkPublicKey(k: string): void {
  try {
    importPublicKey(k);
  } catch (e) {
    throw new HttpError(400, 'invalid_key', `publicKey: ${(e as Error).message}`);
  }
}

export const enrolRoutes: RoutePlugin = async (app, ctx) => {
  const { store, now, audit } = ctx;

  app.post<{ Body: EnrolRequest }>('/v1/enrol', { schema: { querystring: NoQuery, body: EnrolRequestSchema, response: { 200: EnrolResponseSchema } } }, async (req) => {
    checkPublicKey(req.body.publicKey);
    const siteId = `site-${randomBytes(6).toString('hex')}`;
    const tokenHash = sha256hex(req.body.token);
    const t = now();
    const invite = await store.transaction(async (tx) => {
      const inv = await tx.consumeInvite(tokenHash, t);
      if (!inv) return undefined;
      await tx.createSite(
        {
          id: siteId,
          name: inv.site_name,
          institution: inv.institution,
          jurisdiction: inv.jurisdiction,
          // Legacy NOT NULL UNIQUE column from the bearer-credential days: sites hold no secret of ours any more.
          credential_hash: `none:${siteId}`,
          public_key: req.body.publicKey,
          status: 'active',
          created_at: t,
          last_seen_at: t,
        },
      );
      await tx.attachInviteToSite(tokenHash, siteId);
      if (req.body.cohorts) await tx.declareCohorts(siteId, req.body.cohorts, t);
      await appendAudit(tx, audit.key, {
        ts: t,
        actor: siteId,
        kind: 'site.enrolled',
        subject: siteId,
        data: { name: inv.site_name, institution: inv.institution, jurisdiction: inv.jurisdiction, publicKey: req.body.publicKey, cohorts: req.body.cohorts ?? {} },
      });
      return inv;
    });
    if (!invite) throw new HttpError(401, 'invalid_invite', 'the invite token is unknown, already used or expired');
    return { siteId, siteName: invite.site_name };
  });


  app.post<{ Body: UserEnrolRequest }>('/v1/users/enrol', { schema: { querystring: NoQuery, body: UserEnrolRequestSchema, response: { 200: UserEnrolResponseSchema } } }, async (req) => {
    checkPublicKey(req.body.publicKey);
    const t = now();
    const user = await store.transaction(async (tx) => {
      const userId = await tx.consumeUserInvite(sha256hex(req.body.token), t);
      if (!userId) return undefined;
      if (!(await tx.activateUser(userId, req.body.publicKey))) return undefined; // revoked before enrolling
      const u = (await tx.getUser(userId))!;
      await appendAudit(tx, audit.key, { ts: t, actor: userId, kind: 'user.enrolled', subject: userId, data: { name: u.name, role: u.role, institution: u.institution, publicKey: req.body.publicKey } });
      return u;
    });
    if (!user) throw new HttpError(401, 'invalid_invite', 'the invite token is unknown, already used, expired, or its user was revoked');
    return { userId: user.id, name: user.name, role: user.role };
  });
};
