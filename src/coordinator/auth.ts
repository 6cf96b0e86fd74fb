/**
 * Who is calling. Sites present the credential they received at enrolment; operators present a
 * bearer token. Secrets are stored only as SHA-256 digests. Signed requests (Ed25519) plug in here.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Store, SiteRow } from '../store/store.js';

export type Principal =
  | { kind: 'site'; site: SiteRow }
  | { kind: 'user'; id: string; role: 'consortium_admin' | 'study_lead' | 'site_admin' | 'auditor' };

export const sha256hex = (s: string | Uint8Array) => createHash('sha256').update(s).digest('hex');
export const newSecret = (bytes = 32) => randomBytes(bytes).toString('base64url');

export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

function bearer(req: FastifyRequest): string | undefined {
  const h = req.headers.authorization;
  if (!h) return undefined;
  const m = /^Bearer\s+(\S+)$/i.exec(h);
  return m?.[1];
}

export async function ensureAdminToken(store: Store, presetToken?: string): Promise<string | undefined> {
  const existing = await store.getKv('admin_token_sha256');
  if (presetToken) {
    await store.setKv('admin_token_sha256', sha256hex(presetToken));
    return presetToken;
  }
  if (existing) return undefined; // already provisioned; the plaintext lives only in the operator's file
  const token = `adm_${newSecret()}`;
  await store.setKv('admin_token_sha256', sha256hex(token));
  return token;
}

export async function authenticate(store: Store, req: FastifyRequest): Promise<Principal> {
  const token = bearer(req);
  if (!token) throw new HttpError(401, 'unauthenticated', 'missing Authorization: Bearer credential');
  if (token.startsWith('adm_')) {
    const want = await store.getKv('admin_token_sha256');
    const got = sha256hex(token);
    if (want && want.length === got.length && timingSafeEqual(Buffer.from(want), Buffer.from(got))) return { kind: 'user', id: 'admin', role: 'consortium_admin' };
    throw new HttpError(401, 'unauthenticated', 'unknown credential');
  }
  const site = await store.getSiteByCredential(sha256hex(token));
  if (!site) throw new HttpError(401, 'unauthenticated', 'unknown credential');
  if (site.status !== 'active') throw new HttpError(401, 'revoked', `site ${site.name} is ${site.status}`);
  return { kind: 'site', site };
}

export function requireSite(p: Principal): SiteRow {
  if (p.kind !== 'site') throw new HttpError(403, 'forbidden', 'this endpoint is for site agents');
  return p.site;
}

export function requireUser(p: Principal, roles: Principal extends never ? never : string[]): Extract<Principal, { kind: 'user' }> {
  if (p.kind !== 'user') throw new HttpError(403, 'forbidden', 'site credentials cannot call operator endpoints');
  if (!roles.includes(p.role)) throw new HttpError(403, 'forbidden', `role ${p.role} may not do this`);
  return p;
}

export type AuthedRequest = FastifyRequest & { principal: Principal };
export type Reply = FastifyReply;
