/**
 * Users and keys. A consortium admin creates a user with a role (and institution) and gets a one-time,
 * expiring invite; the person redeems it once with the Ed25519 public key `setu user enrol` generated on
 * their machine, and signs every later request with it under key id = their user id. Any identity may
 * rotate its own key (signed with the old one); admins revoke users. Every step is audited in the same
 * transaction as the change.
 */
import type { RoutePlugin } from './context.js';
import { randomBytes } from 'node:crypto';
import { Type } from '@sinclair/typebox';
import { UserInviteRequestSchema, UserInviteResponseSchema, type UserInviteRequest } from '../../protocol/api.js';
import { IdParams, KeyRotatedReply, NoBody, RotateKeyBody, type RotateKeyRequest, NoQuery, RevokedReply, UserViewSchema, WhoAmISchema } from '../../protocol/replies.js';
import { checkPublicKey } from './enrol.js';
import { HttpError, authorize, newSecret, requireUser, sha256hex } from '../auth.js';
import { appendAudit } from '../../governance/audit-store.js';
import { ACTIONS, can, type Action } from '../../governance/roles.js';

export const userRoutes: RoutePlugin = async (app, ctx) => {
  const { store, bus, now, audit } = ctx;

  app.post<{ Body: UserInviteRequest }>('/v1/users', { schema: { querystring: NoQuery, body: UserInviteRequestSchema, response: { 200: UserInviteResponseSchema } } }, async (req) => {
    const admin = requireUser(req.principal!, 'user.create');
    const b = req.body;
    if (await store.getUserByName(b.name)) throw new HttpError(409, 'conflict', `a user named ${b.name} already exists`);
    const id = `user-${randomBytes(6).toString('hex')}`;
    const token = `uinv_${newSecret()}`;
    const t = now();
    // Whole milliseconds: a fractional ttlHours must not reach an integer column (PostgreSQL refuses it).
    const expiresAt = t + Math.round((b.ttlHours ?? 72) * 3600_000);
    await store.transaction(async (tx) => {
      await tx.createUser({ id, name: b.name, role: b.role, institution: b.institution ?? null, public_key: null, status: 'invited', created_by: admin.id, created_at: t });
      await tx.createUserInvite({ token_hash: sha256hex(token), user_id: id, created_at: t, expires_at: expiresAt });
      await appendAudit(tx, audit.key, { ts: t, actor: admin.id, kind: 'invite.issued', subject: id, data: { for: 'user', name: b.name, role: b.role, institution: b.institution ?? null, expiresAt } });
    });
    return { token, userId: id, name: b.name, role: b.role, expiresAt };
  });

  app.get('/v1/users', { schema: { querystring: NoQuery, response: { 200: Type.Array(UserViewSchema) } } }, async (req) => {
    requireUser(req.principal!, 'consortium.view');
    return (await store.listUsers()).map((u) => ({ id: u.id, name: u.name, role: u.role, institution: u.institution, status: u.status, createdAt: u.created_at }));
  });

  app.get('/v1/whoami', { schema: { querystring: NoQuery, response: { 200: WhoAmISchema } } }, async (req) => {
    const p = req.principal!;
    // `actions`: what this role may do (governance/roles.ts), so a client shows only what it may open.
    const actions = (Object.keys(ACTIONS) as Action[]).filter((a) => can(p.kind === 'site' ? 'site' : p.role, a));
    return p.kind === 'site' ? { kind: 'site', id: p.id, name: p.site.name, role: 'site', actions } : { kind: 'user', id: p.id, name: p.name, role: p.role, institution: p.institution, actions };
  });

  app.post<{ Params: { id: string } }>('/v1/users/:id/revoke', { schema: { params: IdParams, querystring: NoQuery, body: NoBody, response: { 200: RevokedReply } } }, async (req) => {
    const admin = requireUser(req.principal!, 'user.revoke');
    const u = (await store.getUser(req.params.id)) ?? (await store.getUserByName(req.params.id));
    if (!u) throw new HttpError(404, 'not_found', `no user ${req.params.id}`);
    const t = now();
    const done = await store.transaction(async (tx) => {
      if (!(await tx.revokeUser(u.id))) return false;
      await appendAudit(tx, audit.key, { ts: t, actor: admin.id, kind: 'user.revoked', subject: u.id, data: { name: u.name, role: u.role } });
      return true;
    });
    if (!done) throw new HttpError(409, 'conflict', `user ${u.name} is already revoked`);
    bus.emit({ type: 'identity.changed', id: u.id });
    return { id: u.id, name: u.name, status: 'revoked' };
  });

  // Key rotation: the request is signed with the old key, so only its holder can replace it.
  app.post<{ Body: RotateKeyRequest }>('/v1/keys/rotate', { schema: { querystring: NoQuery, body: RotateKeyBody, response: { 200: KeyRotatedReply } } }, async (req) => {
    const p = req.principal!;
    authorize(p, 'key.rotate');
    checkPublicKey(req.body.publicKey);
    const t = now();
    await store.transaction(async (tx) => {
      if (p.kind === 'site') await tx.setSitePublicKey(p.id, req.body.publicKey);
      else await tx.setUserPublicKey(p.id, req.body.publicKey);
      await appendAudit(tx, audit.key, { ts: t, actor: p.id, kind: 'key.changed', subject: p.id, data: { publicKey: req.body.publicKey } });
    });
    bus.emit({ type: 'identity.changed', id: p.id });
    return { id: p.id, publicKey: req.body.publicKey };
  });
}
