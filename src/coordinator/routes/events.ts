/**
 * Live events for dashboards, as Server-Sent Events.
 *
 * A browser's EventSource cannot send headers, so it cannot sign its request. Instead the client makes one
 * signed call, `POST /v1/events/token`, and gets a short-lived stream token: the caller's id, role, a digest
 * of its registered public key and an expiry, MACed. `GET /v1/events?token=…[&study=…]` then streams the
 * bus events that role may see.
 *
 * The token is bound to a live identity, not just to its expiry: opening a stream re-reads the user from
 * the store (still active, same role, same key), and an open stream re-checks it whenever that identity
 * changes (the revoke and key-rotation routes emit 'identity.changed') and on every heartbeat (which covers
 * a revocation made through another coordinator sharing the store). A revoked user's stream ends at once.
 *
 * The MAC key is derived from the coordinator's own signing key (`coordinator.key`, mode 600, outside the
 * database) with HKDF. Every coordinator sharing a store already holds that same key (its public half is
 * pinned in the store, ../auth.ts), so they all accept each other's tokens, and someone who can read the
 * database, or a backup of it, cannot mint a token. Site agents cannot get tokens: the stream is for users.
 */
import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import { Type, type Static } from '@sinclair/typebox';
import type { RouteContext, RoutePlugin } from './context.js';
import { HttpError, sha256hex } from '../auth.js';
import { NoBody, NoQuery, TextReply } from '../../protocol/replies.js';
import type { CoordinatorEvent } from '../events.js';
import { scopeOf } from '../../governance/roles.js';
import type { StreamEvent } from '../../protocol/views.js';
import type { AuditKey } from '../../governance/audit-store.js';
import type { Store } from '../../store/store.js';
import { eventStreamsOpen } from '../../observability/metrics.js';
import { isRefusal, refuse } from '../plugins/limits.js';

/** Bus events that never leave the process: long-poll wake-ups and identity changes. */
type InternalEvent = Extract<CoordinatorEvent, { type: 'tasks' } | { type: 'identity.changed' }>;

// The dashboard types the stream with protocol/views.ts's StreamEvent; every bus event the stream sends must
// fit it, or this stops compiling (the bus's own type lives in coordinator/events.ts).
export const asStreamEvent = (e: Exclude<CoordinatorEvent, InternalEvent>): StreamEvent => e;

const isInternal = (e: CoordinatorEvent): e is InternalEvent => e.type === 'tasks' || e.type === 'identity.changed';

export const STREAM_TOKEN_TTL_MS = 10 * 60_000;
const HEARTBEAT_MS = 15_000;

/** The stream-token MAC key: HKDF-SHA256 of the coordinator's Ed25519 private key (never stored). */
export function streamTokenKey(coordinatorKey: AuditKey): Buffer {
  const seed = coordinatorKey.privateKey.export({ format: 'jwk' }).d;
  if (typeof seed !== 'string') throw new Error('the coordinator key is not an Ed25519 private key');
  return Buffer.from(hkdfSync('sha256', Buffer.from(seed, 'base64url'), 'setu', 'setu stream token mac v1', 32));
}

export const StreamTokenSchema = Type.Object({
  token: Type.String({ description: 'pass as ?token= to GET /v1/events; valid until expiresAt' }),
  expiresAt: Type.Number({ description: 'ms since the epoch' }),
  role: Type.String(),
});
export type StreamToken = Static<typeof StreamTokenSchema>;

const EventsQuerySchema = Type.Object(
  {
    token: Type.String({ minLength: 10, maxLength: 2000 }),
    study: Type.Optional(Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9._:-]+$' })),
  },
  { additionalProperties: false },
);
type EventsQuery = Static<typeof EventsQuerySchema>;

interface StreamClaims {
  sub: string;
  role: string;
  /** SHA-256 (hex) of the public key the token was issued to: a rotated key ends the stream. */
  kid: string;
  exp: number;
}

/** Why the token's holder may no longer watch, or undefined while it is the same live identity. */
async function holderProblem(store: Store, c: StreamClaims): Promise<string | undefined> {
  const user = await store.getUser(c.sub);
  if (!user || user.status !== 'active') return `user ${c.sub} is ${user?.status ?? 'unknown'}`;
  if (!user.public_key || sha256hex(user.public_key) !== c.kid) return `the key of user ${c.sub} has changed`;
  if (user.role !== c.role) return `the role of user ${c.sub} has changed`;
  return undefined;
}

/** Which bus events a role may see. Internal events (wake-ups, identity changes) never leave the process. */
export function visibleTo(role: string, e: CoordinatorEvent, study?: string): boolean {
  if (isInternal(e)) return false;
  // Site agents see their own tasks through the agent routes; the consortium-wide stream is for users.
  if (role === 'site') return false;
  const scope = scopeOf(role, 'study.view');
  if (scope === null) return false;
  if (study !== undefined) return e.studyId === study;
  // A refusal that names no study (a malformed upload) is consortium-wide information.
  if (e.studyId === null) return scope === 'any';
  return true;
}

/** Issues and checks stream tokens: MACed claims, checked against the live identity on every use. */
function streamTokens(ctx: RouteContext) {
  const { store, now } = ctx;
  const macKey = streamTokenKey(ctx.audit.key);
  const mac = (payload: string) => createHmac('sha256', macKey).update(`setu-stream\n${payload}`).digest();

  function issue(claims: StreamClaims): string {
    const payload = Buffer.from(JSON.stringify(claims)).toString('base64url');
    return `sst_${payload}.${mac(payload).toString('base64url')}`;
  }

  async function check(token: string): Promise<StreamClaims> {
    const m = /^sst_([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]{43})$/.exec(token);
    if (!m) throw new HttpError(401, 'unauthenticated', 'malformed stream token; get one from POST /v1/events/token');
    const [, payload, sig] = m as unknown as [string, string, string];
    const want = mac(payload);
    const got = Buffer.from(sig, 'base64url');
    if (got.length !== want.length || !timingSafeEqual(got, want)) throw new HttpError(401, 'unauthenticated', 'bad stream token');
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as StreamClaims;
    if (!(claims.exp > now())) throw new HttpError(401, 'expired', 'the stream token has expired; get a new one from POST /v1/events/token');
    const problem = await holderProblem(store, claims);
    if (problem) throw new HttpError(401, 'revoked', `${problem}; the stream token is no longer valid`);
    return claims;
  }
  return { issue, check };
}

/** POST /v1/events/token (signed, in the authenticated scope): a stream token for the caller. */
export const eventTokenRoutes: RoutePlugin = async (app, ctx) => {
  const { store, now } = ctx;
  const { issue } = streamTokens(ctx);

  app.post(
    '/v1/events/token',
    {
      schema: {
        summary: 'Get a short-lived token for the live event stream (EventSource cannot send credentials)',
        querystring: NoQuery,
        body: NoBody,
        response: { 200: StreamTokenSchema },
      },
    },
    async (req) => {
      const p = req.principal!;
      if (p.kind !== 'user') throw new HttpError(403, 'forbidden', 'the event stream is for users; site credentials cannot open it');
      if (scopeOf(p.role, 'study.view') === null) throw new HttpError(403, 'forbidden', `role ${p.role} may not watch studies`);
      const user = await store.getUser(p.id);
      if (!user?.public_key) throw new HttpError(401, 'revoked', `user ${p.id} has no registered key`);
      const exp = now() + STREAM_TOKEN_TTL_MS;
      return { token: issue({ sub: p.id, role: p.role, kid: sha256hex(user.public_key), exp }), expiresAt: exp, role: p.role };
    },
  );
};

/** GET /v1/events (public: the token is the credential, since an EventSource cannot sign). */
export const eventStreamRoutes: RoutePlugin = async (app, ctx) => {
  const { store, bus, now } = ctx;
  const { check } = streamTokens(ctx);

  // Open streams never end by themselves; close them when the server closes so app.close() does not hang.
  const open = new Set<() => void>();
  app.addHook('preClose', async () => {
    for (const end of [...open]) end();
  });

  app.get<{ Querystring: EventsQuery }>(
    '/v1/events',
    {
      schema: {
        summary: 'Live coordinator events as Server-Sent Events (text/event-stream), filtered by the token holder’s role and optionally by study',
        querystring: EventsQuerySchema,
        response: { 200: { content: { 'text/event-stream': { schema: TextReply('Server-Sent Events; each event\'s name is its type (protocol/views.ts StreamEvent)') } } } },
      },
    },
    async (req, reply) => {
      const claims = await check(req.query.token);
      const study = req.query.study;
      if (study !== undefined && !(await store.getStudy(study))) throw new HttpError(404, 'not_found', `no study ${study}`);
      // One holder may keep only so many streams open (plugins/limits.ts); the slot is given back in stop().
      const slot = ctx.limits.takeStream(claims.sub);
      if (isRefusal(slot)) return refuse(req, reply, slot);
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-store',
        connection: 'keep-alive',
        // Reverse proxies (nginx) must not buffer a stream.
        'x-accel-buffering': 'no',
      });
      let seq = 0;
      const send = (type: string, data: unknown) => res.write(`id: ${++seq}\nevent: ${type}\ndata: ${JSON.stringify(data)}\n\n`);
      // The client reconnects after 2 s if the connection drops (the EventSource default is 3-5 s).
      res.write('retry: 2000\n\n');
      send('ready', { role: claims.role, study: study ?? null, expiresAt: claims.exp });
      // The holder is re-checked when its identity changes and on every heartbeat; a revoked one is told why.
      const recheck = async () => {
        let problem: string | undefined;
        try {
          problem = await holderProblem(store, claims);
        } catch (e) {
          // The store not answering is not a revocation; the next heartbeat checks again.
          req.log.warn({ err: e }, 'event stream: could not re-check the token holder');
          return;
        }
        if (problem && open.has(end)) {
          send('revoked', { type: 'revoked', reason: problem });
          end();
        }
      };
      const off = bus.on((e) => {
        if (e.type === 'identity.changed') {
          if (e.id === claims.sub) void recheck();
        } else if (!isInternal(e) && visibleTo(claims.role, e, study)) send(e.type, asStreamEvent(e));
      });
      const heartbeat = setInterval(() => {
        res.write(': ping\n\n');
        void recheck();
      }, HEARTBEAT_MS);
      // End the stream when the token does; the client asks for a new token, which re-checks the credential.
      const expiry = setTimeout(() => {
        send('expired', { at: now() });
        res.end();
      }, Math.max(0, claims.exp - now()));
      const stop = () => {
        if (!open.has(end)) return;
        off();
        clearInterval(heartbeat);
        clearTimeout(expiry);
        open.delete(end);
        eventStreamsOpen.dec();
        slot();
      };
      const end = () => {
        stop();
        res.end();
      };
      open.add(end);
      eventStreamsOpen.inc();
      res.on('close', stop);
      req.raw.on('close', stop);
      // A client already gone (before the listeners were attached) gives its slot back now.
      if (res.destroyed) stop();
    },
  );
}
