/**
 * Bounds on what one caller, or all of them together, may hold open on this coordinator at once: long-polls per
 * site, uploads in flight (coordinator-wide and per site) and live event streams per identity. Past a bound the
 * next request is refused at once with 429 (one caller holds too much: it should wait for its own requests) or
 * 503 (the coordinator as a whole is full: anyone may retry shortly), always with Retry-After and a message that
 * names the limit and its value, instead of every caller slowing down together.
 *
 * The long-poll and upload slots are taken in an `onRequest` hook that runs inside the signed scope right after
 * the authentication hook (server.ts), so the caller is known and not a byte of an upload's body has been read:
 * a burst of large uploads is refused before any of it is buffered. A slot is given back when the response
 * closes, which happens on every exit path (answered, timed out, failed, client gone). Event streams take
 * theirs in the route once the stream token names the holder (routes/events.ts).
 *
 * Which routes are long-polls and uploads is the table below (a test checks that each one exists), so the
 * route files need no hook of their own.
 *
 * The same hook bounds the bytes of accepted updates an open round holds until it is aggregated (what its
 * aggregation reads at once): an upload reserves its declared length against its task's round, keeps it when it
 * is answered 200, and the round's bytes are freed by the bus events that close it. Every count is this process's
 * own: behind a load balancer each coordinator bounds what it holds.
 */
import type { FastifyReply, FastifyRequest, onRequestAsyncHookHandler } from 'fastify';
import { limitRefusals, openLongPolls, openUploadBytes, openUploads, roundUpdateBytes } from '../../observability/metrics.js';
import type { Store } from '../../store/store.js';
import type { EventBus } from '../events.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** This coordinator's bounds and what is open against them (server.ts). */
    limits: Limits;
  }
}

export interface LimitOptions {
  /** Long-polls (task and SecAgg+ stage polls) one site may hold open at once (default 2). */
  longPollsPerSite?: number;
  /** Uploads (fit results, masked SecAgg+ inputs) in flight on this coordinator at once (default 1024). */
  uploads?: number;
  /**
   * Bytes those uploads may declare (content-length) in total, so that what is buffered at once is bounded whatever
   * the model's size (default 1 GiB). One upload is always admitted when none is in flight, however large.
   */
  uploadBytes?: number;
  /** Uploads one site may have in flight at once (default 2). */
  uploadsPerSite?: number;
  /** Live event streams (GET /v1/events) one user may hold open at once (default 4). */
  streamsPerIdentity?: number;
  /**
   * Bytes of accepted updates one open round may hold before it is aggregated (default 2 GiB): what the round's
   * aggregation will read at once. An update that would pass it is answered 503 until the round commits (the round
   * then closes on what it holds, at its deadline or minSites). The first update of a round is always admitted.
   */
  roundBytes?: number;
}

// A thousand sites sending tiny updates at once pass (the count); a hundred 4 MB updates pass, three hundred wait
// their turn (the bytes): memory held for uploads stays bounded whatever the number of sites.
export const LIMIT_DEFAULTS: Required<LimitOptions> = { longPollsPerSite: 2, uploads: 1024, uploadBytes: 1024 ** 3, uploadsPerSite: 2, streamsPerIdentity: 4, roundBytes: 2 * 1024 ** 3 };

/** The names of the limits, as the metric label `limit` and the error codes carry them. */
export type LimitName = 'longpolls_per_site' | 'uploads' | 'upload_bytes' | 'uploads_per_site' | 'streams_per_identity' | 'round_bytes';

/** Seconds a refused caller is asked to wait: about the time a slot takes to come free. */
export const RETRY_AFTER_S: Record<LimitName, number> = { longpolls_per_site: 5, uploads: 2, upload_bytes: 2, uploads_per_site: 2, streams_per_identity: 10, round_bytes: 10 };

/** The routes whose requests hold a long-poll slot: GET, by route pattern. */
export const LONG_POLL_ROUTES = [
  '/v1/agent/task',
  '/v1/agent/secagg/:taskId/neighbour-keys',
  '/v1/agent/secagg/:taskId/mask-request',
  '/v1/agent/secagg/:taskId/unmask-request',
] as const;
/** The routes whose requests hold an upload slot: POST, by route pattern (the bodies that carry a model). */
export const UPLOAD_ROUTES = ['/v1/agent/tasks/:id/result', '/v1/agent/secagg/:taskId/masked'] as const;
/**
 * A chunk of a chunked upload (routes/uploads.ts): PUT, holds an upload slot for its own length (at most the chunk
 * size), as any body being buffered does. Its round's bytes are reserved when the upload completes, for the
 * whole update's size (COMPLETE_ROUTES), since that is when they join the round.
 */
export const CHUNK_ROUTES = ['/v1/agent/uploads/:id'] as const;
export const COMPLETE_ROUTES = ['/v1/agent/uploads/:id/complete'] as const;

/** A refusal: the status, the limit crossed, and what the caller reads. */
export interface Refusal {
  status: 429 | 503;
  limit: LimitName;
  retryAfterS: number;
  message: string;
}

/** Counts of what is open, per key; a key's entry goes away when its count drops to zero, so the map stays small. */
class Counter {
  private readonly counts = new Map<string, number>();
  /** The sum over every key. */
  total = 0;
  get(key: string): number {
    return this.counts.get(key) ?? 0;
  }
  add(key: string, d: number): void {
    const n = this.get(key) + d;
    this.total += d;
    if (n <= 0) this.counts.delete(key);
    else this.counts.set(key, n);
  }
}

/** The counters, and the rule for each limit. Every `take*` returns a release function (idempotent) or a Refusal. */
export class Limits {
  readonly o: Required<LimitOptions>;
  private readonly polls = new Counter();
  private readonly uploadsBySite = new Counter();
  private uploadsOpen = 0;
  private uploadBytesOpen = 0;
  private readonly streams = new Counter();
  /** Per open round (`study\u0000round`): bytes accepted (held) and being received for it (reserved). */
  private readonly rounds = new Map<string, { study: string; round: number; held: number; reserved: number }>();

  constructor(o: LimitOptions = {}) {
    this.o = { ...LIMIT_DEFAULTS, ...Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) };
    for (const [k, v] of Object.entries(this.o)) {
      if (!Number.isInteger(v) || v < 1) throw new Error(`limit ${k} must be a whole number of at least 1, got ${String(v)}`);
    }
  }

  /** What is open now (for tests and the status of a refusal). */
  get open(): { longPolls: number; uploads: number; uploadBytes: number; streams: number } {
    return { longPolls: this.polls.total, uploads: this.uploadsOpen, uploadBytes: this.uploadBytesOpen, streams: this.streams.total };
  }

  takeLongPoll(siteId: string): (() => void) | Refusal {
    const n = this.polls.get(siteId);
    if (n >= this.o.longPollsPerSite) {
      return refusal(429, 'longpolls_per_site', `site ${siteId} already has ${n} long-polls open, the most one site may hold (longPollsPerSite ${this.o.longPollsPerSite}); let one end before opening another`);
    }
    this.polls.add(siteId, 1);
    openLongPolls.inc();
    return once(() => {
      this.polls.add(siteId, -1);
      openLongPolls.dec();
    });
  }

  /** `bytes`: the upload's declared length (a body of unknown length is charged the largest one allowed). */
  takeUpload(siteId: string, bytes: number): (() => void) | Refusal {
    const mine = this.uploadsBySite.get(siteId);
    if (mine >= this.o.uploadsPerSite) {
      return refusal(429, 'uploads_per_site', `site ${siteId} already has ${mine} uploads in flight, the most one site may send at once (uploadsPerSite ${this.o.uploadsPerSite}); send the next when one has been answered`);
    }
    if (this.uploadsOpen >= this.o.uploads) {
      return refusal(503, 'uploads', `the coordinator is receiving ${this.uploadsOpen} uploads, its limit (uploads ${this.o.uploads}); retry shortly`);
    }
    if (this.uploadsOpen > 0 && this.uploadBytesOpen + bytes > this.o.uploadBytes) {
      return refusal(503, 'upload_bytes', `the coordinator is receiving ${this.uploadBytesOpen} bytes of uploads and this one declares ${bytes}, over its limit (uploadBytes ${this.o.uploadBytes}); retry shortly`);
    }
    this.uploadsBySite.add(siteId, 1);
    this.uploadsOpen++;
    this.uploadBytesOpen += bytes;
    openUploads.inc();
    openUploadBytes.inc(bytes);
    return once(() => {
      this.uploadsBySite.add(siteId, -1);
      this.uploadsOpen--;
      this.uploadBytesOpen -= bytes;
      openUploads.dec();
      openUploadBytes.dec(bytes);
    });
  }

  /**
   * Reserves an upload's bytes against its round. `accepted()` keeps them held until the round closes
   * (`roundClosed`); `release()` gives them back (the upload was refused or never finished). Either, once.
   */
  takeRoundBytes(study: string, round: number, bytes: number): { accepted(): void; release(): void } | Refusal {
    const key = `${study}\u0000${round}`;
    let r = this.rounds.get(key);
    if (!r) {
      // An earlier round of this study that this process never saw close (another coordinator committed it) holds
      // nothing any more: a study's rounds close in order.
      for (const [k, o] of this.rounds) if (o.study === study && o.round < round) this.drop(k);
      r = { study, round, held: 0, reserved: 0 };
      this.rounds.set(key, r);
    }
    const used = r.held + r.reserved;
    if (used > 0 && used + bytes > this.o.roundBytes) {
      return refusal(503, 'round_bytes', `round ${round} of study ${study} already holds ${used} bytes of updates and this one declares ${bytes}, over its limit (roundBytes ${this.o.roundBytes}); it is accepted again once the round has been aggregated`);
    }
    r.reserved += bytes;
    const entry = r;
    let done = false;
    return {
      accepted: () => {
        if (done) return;
        done = true;
        entry.reserved -= bytes;
        if (this.rounds.get(key) !== entry) return; // the round closed meanwhile
        entry.held += bytes;
        roundUpdateBytes.inc(bytes);
      },
      release: () => {
        if (done) return;
        done = true;
        entry.reserved -= bytes;
      },
    };
  }

  /** A round was aggregated, reset or its study ended (no `round`: every round of the study): its bytes are free. */
  roundClosed(study: string, round?: number): void {
    for (const [k, o] of this.rounds) if (o.study === study && (round === undefined || o.round === round)) this.drop(k);
  }

  private drop(key: string): void {
    const r = this.rounds.get(key);
    if (!r) return;
    roundUpdateBytes.dec(r.held);
    this.rounds.delete(key);
  }

  /** Bytes held by one round (tests). */
  roundHeld(study: string, round: number): number {
    return this.rounds.get(`${study}\u0000${round}`)?.held ?? 0;
  }

  takeStream(identity: string): (() => void) | Refusal {
    const n = this.streams.get(identity);
    if (n >= this.o.streamsPerIdentity) {
      return refusal(429, 'streams_per_identity', `${identity} already has ${n} event streams open, the most one identity may hold (streamsPerIdentity ${this.o.streamsPerIdentity}); close one (a dashboard tab) first`);
    }
    this.streams.add(identity, 1);
    return once(() => this.streams.add(identity, -1));
  }
}

function refusal(status: 429 | 503, limit: LimitName, message: string): Refusal {
  return { status, limit, retryAfterS: RETRY_AFTER_S[limit], message: `${message} (retry after ${RETRY_AFTER_S[limit]} s)` };
}

function once(f: () => void): () => void {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    f();
  };
}

export const isRefusal = (r: unknown): r is Refusal => typeof r === 'object' && r !== null && 'limit' in r && 'retryAfterS' in r;

/**
 * Answers a refusal: the status, Retry-After, `{error: 'limit_<name>', message}`, one log line, and the refusal
 * counted under its limit. Returns the reply (an onRequest hook that returns it ends the request there).
 */
export function refuse(req: FastifyRequest, reply: FastifyReply, r: Refusal): FastifyReply {
  limitRefusals.inc({ limit: r.limit });
  req.log.warn({ status: r.status, limit: r.limit, retryAfterS: r.retryAfterS }, `refused ${req.method} ${req.routeOptions.url ?? req.url}: ${r.message}`);
  return reply.status(r.status).header('retry-after', String(r.retryAfterS)).send({ error: `limit_${r.limit}`, message: r.message });
}

/** Gives the slot back when the response closes: answered, failed, or the client went away first. */
export function releaseOnClose(reply: FastifyReply, release: () => void): void {
  if (reply.raw.closed || reply.raw.destroyed) release();
  else reply.raw.once('close', release);
}

const LONG_POLLS = new Set<string>(LONG_POLL_ROUTES);
const UPLOADS = new Set<string>(UPLOAD_ROUTES);
const CHUNKS = new Set<string>(CHUNK_ROUTES);
const COMPLETES = new Set<string>(COMPLETE_ROUTES);

/**
 * The hook of the signed scope, added after the authentication hook: a site's long-poll or upload takes its slot
 * or is refused. Requests of other routes, and of users, pass untouched.
 */
export function limitHook(limits: Limits, o: { bodyLimit: number; store: Store; bus: EventBus }): onRequestAsyncHookHandler {
  // A round's held bytes are free once it is aggregated, reopened (a reset discards its updates) or its study ends.
  o.bus.on((e) => {
    if (e.type === 'round.committed' || e.type === 'round.opened') limits.roundClosed(e.studyId, e.round);
    else if (e.type === 'study.status' && e.status !== 'running') limits.roundClosed(e.studyId);
  });
  return async (req, reply) => {
    const p = req.principal;
    if (p?.kind !== 'site') return;
    const url = req.routeOptions.url ?? '';
    const declared = Number(req.headers['content-length']);
    const bytes = Number.isFinite(declared) && declared >= 0 ? Math.min(declared, o.bodyLimit) : o.bodyLimit;
    const completes = req.method === 'POST' && COMPLETES.has(url);
    const upload = (req.method === 'POST' && UPLOADS.has(url)) || (req.method === 'PUT' && CHUNKS.has(url));
    const take = req.method === 'GET' && LONG_POLLS.has(url) ? limits.takeLongPoll(p.id) : upload ? limits.takeUpload(p.id, bytes) : undefined;
    if (take === undefined && !completes) return;
    if (take !== undefined) {
      if (isRefusal(take)) return refuse(req, reply, take);
      releaseOnClose(reply, take);
    }
    if (!completes && !UPLOADS.has(url)) return;
    // The round the update is for: a task the site does not hold passes here and is refused by its route.
    const params = req.params as { id?: string; taskId?: string };
    const pending = completes ? await o.store.getUpload(params.id ?? '') : undefined;
    if (completes && pending?.site_id !== p.id) return;
    const task = await o.store.getTask(pending?.task_id ?? params.id ?? params.taskId ?? '');
    if (!task || task.site_id !== p.id) return;
    // The result route's size check and handler use this row rather than read it again (routes/agent.ts).
    if (!pending) req.namedTask = task;
    if (task.kind !== 'fit') return;
    const round = limits.takeRoundBytes(task.study_id, task.round, pending?.size ?? bytes);
    if (isRefusal(round)) return refuse(req, reply, round);
    releaseOnClose(reply, () => (reply.raw.statusCode === 200 ? round.accepted() : round.release()));
  };
}
