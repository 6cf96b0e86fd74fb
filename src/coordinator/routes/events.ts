/**
 * Live events for dashboards, as Server-Sent Events.
 *
 * A browser's EventSource cannot send headers, so it cannot present a bearer token or sign its request.
 * Instead the client makes one authenticated call, `POST /v1/events/token`, with whatever credential the
 * API accepts (the same check as every other route), and gets a short-lived stream token: the caller's
 * id and role and an expiry, MACed with a key kept in the store (so every coordinator sharing the store
 * accepts it). `GET /v1/events?token=…[&study=…]` then streams the bus events that role may see. The
 * stream ends when the token expires; the client fetches a new token and reconnects, so a revoked user
 * loses the stream within one token lifetime.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import type { RouteContext } from './context.js';
import { HttpError } from '../auth.js';
import type { CoordinatorEvent } from '../events.js';
import { scopeOf } from '../../governance/roles.js';
import type { StreamEvent } from '../../protocol/views.js';

// The dashboard types the stream with protocol/views.ts's StreamEvent; every bus event the stream sends must
// fit it, or this stops compiling (the bus's own type lives in coordinator/events.ts).
export const asStreamEvent = (e: Exclude<CoordinatorEvent, { type: 'tasks' }>): StreamEvent => e;

export const STREAM_TOKEN_TTL_MS = 10 * 60_000;
const KEY_NAME = 'events_stream_key';
const HEARTBEAT_MS = 15_000;

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
  exp: number;
}

/** Which bus events a role may see. Internal wake-ups ('tasks') never leave the process. */
export function visibleTo(role: string, e: CoordinatorEvent, study?: string): boolean {
  if (e.type === 'tasks') return false;
  // Site agents see their own tasks through the agent routes; the consortium-wide stream is for users.
  if (role === 'site') return false;
  const scope = scopeOf(role, 'study.view');
  if (scope === null) return false;
  if (study !== undefined) return e.studyId === study;
  // A refusal that names no study (a malformed upload) is consortium-wide information.
  if (e.studyId === null) return scope === 'any';
  return true;
}

export function eventRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const { store, bus, now, auth } = ctx;
  let keyPromise: Promise<Buffer> | undefined;
  const macKey = () =>
    (keyPromise ??= (async () => {
      let k = await store.getKv(KEY_NAME);
      if (!k) {
        // Two coordinators may race here; re-reading after the write makes both use whichever landed.
        await store.setKv(KEY_NAME, randomBytes(32).toString('base64url'));
        k = (await store.getKv(KEY_NAME))!;
      }
      return Buffer.from(k, 'base64url');
    })().catch((e) => {
      keyPromise = undefined;
      throw e;
    }));

  // Open streams never end by themselves; close them when the server closes so app.close() does not hang.
  const open = new Set<() => void>();
  app.addHook('preClose', async () => {
    for (const end of [...open]) end();
  });

  const mac = async (payload: string) => createHmac('sha256', await macKey()).update(`setu-stream\n${payload}`).digest();

  async function issue(claims: StreamClaims): Promise<string> {
    const payload = Buffer.from(JSON.stringify(claims)).toString('base64url');
    return `sst_${payload}.${(await mac(payload)).toString('base64url')}`;
  }

  async function check(token: string): Promise<StreamClaims> {
    const m = /^sst_([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]{43})$/.exec(token);
    if (!m) throw new HttpError(401, 'unauthenticated', 'malformed stream token; get one from POST /v1/events/token');
    const [, payload, sig] = m as unknown as [string, string, string];
    const want = await mac(payload);
    const got = Buffer.from(sig, 'base64url');
    if (got.length !== want.length || !timingSafeEqual(got, want)) throw new HttpError(401, 'unauthenticated', 'bad stream token');
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as StreamClaims;
    if (!(claims.exp > now())) throw new HttpError(401, 'expired', 'the stream token has expired; get a new one from POST /v1/events/token');
    return claims;
  }

  app.post(
    '/v1/events/token',
    {
      preValidation: auth,
      schema: {
        summary: 'Get a short-lived token for the live event stream (EventSource cannot send credentials)',
        response: { 200: StreamTokenSchema },
      },
    },
    async (req) => {
      const p = req.principal!;
      if (p.kind !== 'user') throw new HttpError(403, 'forbidden', 'the event stream is for users; site credentials cannot open it');
      if (scopeOf(p.role, 'study.view') === null) throw new HttpError(403, 'forbidden', `role ${p.role} may not watch studies`);
      const exp = now() + STREAM_TOKEN_TTL_MS;
      return { token: await issue({ sub: p.id, role: p.role, exp }), expiresAt: exp, role: p.role };
    },
  );

  app.get<{ Querystring: EventsQuery }>(
    '/v1/events',
    {
      schema: {
        summary: 'Live coordinator events as Server-Sent Events (text/event-stream), filtered by the token holder’s role and optionally by study',
        querystring: EventsQuerySchema,
      },
    },
    async (req, reply) => {
      const claims = await check(req.query.token);
      const study = req.query.study;
      if (study !== undefined && !(await store.getStudy(study))) throw new HttpError(404, 'not_found', `no study ${study}`);
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
      const off = bus.on((e) => {
        if (e.type !== 'tasks' && visibleTo(claims.role, e, study)) send(e.type, asStreamEvent(e));
      });
      const heartbeat = setInterval(() => res.write(': ping\n\n'), HEARTBEAT_MS);
      // End the stream when the token does; the client asks for a new token, which re-checks the credential.
      const expiry = setTimeout(() => {
        send('expired', { at: now() });
        res.end();
      }, Math.max(0, claims.exp - now()));
      const stop = () => {
        off();
        clearInterval(heartbeat);
        clearTimeout(expiry);
        open.delete(end);
      };
      const end = () => {
        stop();
        res.end();
      };
      open.add(end);
      res.on('close', stop);
      req.raw.on('close', stop);
    },
  );
}
