/**
 * Signatures before bodies. A signed request declares its body's SHA-256 in `x-setu-content-sha256` (it is
 * the digest in the signed canonical string, src/protocol/signing.ts), so its signature is checked from the
 * headers alone when the request arrives, before a byte of its body is read (../auth.ts `signatureHook`, the
 * `onRequest` hook of the authenticated scope in server.ts). What this plugin adds, for every route:
 *  - a request that did not authenticate (every public route: enrolment) may carry at most `preAuthBodyLimit`
 *    bytes, one that did up to `bodyLimit`; a declared length over the limit is refused before reading;
 *  - the bytes then received must hash to the signed digest, whatever the content type: the only body
 *    parsers are the two below, both reading through `readBody`; any other content type is refused (415)
 *    without reading; a request whose signature covers a body but that sends none is refused before its
 *    handler runs; GET, HEAD and TRACE may not carry a body at all;
 *  - except on a route with `config.streamedBody` (an upload's chunk, a single-body fit result): its octet-stream
 *    body is handed to the handler unread, as the request's stream (`boundedBody` counts it against the limits), and
 *    the handler hashes the bytes on their way to disk and keeps them only if they match the signed digest
 *    (routes/uploads.ts, routes/agent.ts): a body in flight holds no memory of its size. Only a route with
 *    `config.chunkDigest` (an upload's chunk) accepts a request signed over a declared chunk digest
 *    (x-setu-chunk-sha256, UNSIGNED-PAYLOAD style): elsewhere it is refused before reading.
 */
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { AuthError, HttpError, framesBody } from '../auth.js';
import { EMPTY_BODY_SHA256, HEADER_CHUNK_SHA256, HEADER_CONTENT_SHA256 } from '../../protocol/signing.js';
import { refuseBadText } from './input-rules.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** Set once the body's bytes were read and matched the signed digest. */
    bodyVerified?: boolean;
  }
  interface FastifyContextConfig {
    /**
     * The route's octet-stream body is its request stream, unread (no buffer, no hash here): the handler must hash
     * every byte against `req.signedBodySha256` and keep nothing that does not match (read it through `boundedBody`).
     */
    streamedBody?: boolean;
    /** The route accepts requests signed over a declared chunk digest (x-setu-chunk-sha256): it must also stream. */
    chunkDigest?: boolean;
  }
}

export interface SignedRequestOptions {
  /** Largest body of a request that is not (yet) authenticated, bytes. */
  preAuthBodyLimit: number;
  /** Largest body of an authenticated request, bytes. */
  bodyLimit: number;
}

const BODYLESS = new Set(['GET', 'HEAD', 'TRACE']);

function tooLarge(limit: number, authenticated: boolean): HttpError {
  return new HttpError(413, 'body_too_large', authenticated ? `request body exceeds the limit of ${limit} bytes` : `an unauthenticated request body may hold at most ${limit} bytes; sign the request for the full limit`);
}

/**
 * Reads a body up to `limit` bytes, hashing as it goes, and checks it against the signed digest (when the
 * request was signed). Past the limit it stops buffering at once and lets the rest drain unread.
 */
export function readBody(req: FastifyRequest, payload: Readable, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    // A declared length (within the limit: preParsing refused a larger one) is read into one buffer of that size,
    // so a large body (an upload's chunk) is copied once, not gathered and concatenated.
    const declared = Number(req.headers['content-length']);
    const known = Number.isSafeInteger(declared) && declared > 0 && declared <= limit;
    const into = known ? Buffer.allocUnsafe(declared) : undefined;
    const chunks: Buffer[] = [];
    const hash = createHash('sha256');
    let received = 0;
    const cleanup = () => {
      payload.removeListener('data', onData);
      payload.removeListener('end', onEnd);
      payload.removeListener('error', onError);
    };
    const onData = (chunk: Buffer) => {
      received += chunk.length;
      if (received > limit) {
        cleanup();
        // Keep draining so the answer can be sent; nothing more is kept.
        payload.resume();
        reject(tooLarge(limit, req.principal !== undefined));
        return;
      }
      if (into && received > into.length) {
        cleanup();
        payload.resume();
        reject(new HttpError(400, 'bad_body', `the request body runs past its content-length of ${into.length} bytes`));
        return;
      }
      hash.update(chunk);
      if (into) chunk.copy(into, received - chunk.length);
      else chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      if (into && received !== into.length) {
        reject(new HttpError(400, 'bad_body', `the request body ended after ${received} of its content-length of ${into.length} bytes`));
        return;
      }
      const digest = hash.digest('hex');
      if (req.signedBodySha256 !== undefined && digest !== req.signedBodySha256) {
        reject(new AuthError('unauthenticated', `the body received (${received} bytes, SHA-256 ${digest}) is not the body the signature covers (${HEADER_CONTENT_SHA256} ${req.signedBodySha256})`, req.principal?.id));
        return;
      }
      req.bodyVerified = true;
      resolve(into ?? Buffer.concat(chunks, received));
    };
    const onError = (e: Error) => {
      cleanup();
      reject(Object.assign(new HttpError(400, 'bad_body', `the request body could not be read: ${e.message}`), { cause: e }));
    };
    payload.on('data', onData);
    payload.on('end', onEnd);
    payload.on('error', onError);
  });
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

export const isStream = (b: unknown): b is Readable => typeof b === 'object' && b !== null && !Buffer.isBuffer(b) && typeof (b as Readable).pipe === 'function';

/**
 * A streamed body's bytes (a `config.streamedBody` route's octet-stream), as they arrive: never more than the caller's
 * limit (its own, if lower: `maxBytes`) nor than its declared content-length, and not ending short of it; each
 * refusal is the one `readBody` gives. The route hashes them against the signed digest on their way to disk.
 */
export async function* boundedBody(req: FastifyRequest, payload: Readable, opts: { bodyLimit: number; maxBytes?: number; overMax?: () => HttpError }): AsyncGenerator<Buffer> {
  const bodyLimit = Math.min(opts.bodyLimit, req.routeOptions.bodyLimit ?? opts.bodyLimit);
  const limit = Math.min(bodyLimit, opts.maxBytes ?? Infinity);
  const declared = Number(req.headers['content-length']);
  const known = Number.isSafeInteger(declared) && declared >= 0;
  let received = 0;
  let ended = false;
  try {
    // Left early (refused here, or the store failing), the request is drained, not destroyed: the answer must still
    // reach a client that is sending the rest (a destroyed stream resets its connection first).
    for await (const chunk of payload.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
      received += chunk.length;
      if (received > limit) throw limit < bodyLimit && opts.overMax ? opts.overMax() : tooLarge(limit, true);
      if (known && received > declared) throw new HttpError(400, 'bad_body', `the request body runs past its content-length of ${declared} bytes`);
      yield chunk;
    }
    ended = true;
  } catch (e) {
    if (e instanceof HttpError) throw e;
    throw Object.assign(new HttpError(400, 'bad_body', `the request body could not be read: ${(e as Error).message}`), { cause: e });
  } finally {
    if (!ended && !payload.destroyed) payload.resume();
  }
  if (known && received !== declared) throw new HttpError(400, 'bad_body', `the request body ended after ${received} of its content-length of ${declared} bytes`);
}

export function signedRequests(app: FastifyInstance, o: SignedRequestOptions): void {
  const preAuthLimit = Math.min(o.preAuthBodyLimit, o.bodyLimit);
  // A route may take less than the whole limit (a chunk of an upload: routes/uploads.ts), never more.
  const limitFor = (req: FastifyRequest) => (req.principal ? Math.min(o.bodyLimit, req.routeOptions.bodyLimit ?? o.bodyLimit) : preAuthLimit);

  app.addHook('onRequest', async (req) => {
    if (BODYLESS.has(req.method) && framesBody(req)) throw new HttpError(400, 'unexpected_body', `a ${req.method} request carries no body`);
  });

  // preParsing runs after every onRequest hook, the authenticated scope's included, so the caller is known:
  // a declared length over its limit is refused before a byte is read.
  app.addHook('preParsing', async (req) => {
    const len = Number(req.headers['content-length']);
    if (Number.isFinite(len) && len > limitFor(req)) throw tooLarge(limitFor(req), req.principal !== undefined);
    if (req.unsignedPayload && !(req.routeOptions.config.streamedBody && req.routeOptions.config.chunkDigest)) {
      throw new HttpError(400, 'unsigned_payload_not_allowed', `${HEADER_CHUNK_SHA256} is accepted only on an upload's chunk (PUT /v1/agent/uploads/:id); sign this request's body with ${HEADER_CONTENT_SHA256}`);
    }
  });

  // No body was read (none was sent): the signature must then cover an empty body.
  app.addHook('preValidation', async (req) => {
    // A streamed body is checked by its route as it is read (its handler refuses one that does not match); so is an
    // upload's chunk signed over a declared digest, body or none.
    if (req.routeOptions.config.streamedBody && (req.routeOptions.config.chunkDigest || isStream(req.body))) return;
    if (req.signedBodySha256 !== undefined && !req.bodyVerified && req.signedBodySha256 !== EMPTY_BODY_SHA256) {
      throw new AuthError('unauthenticated', `the signature covers a body (${HEADER_CONTENT_SHA256} ${req.signedBodySha256}) but none was received`, req.principal?.id);
    }
  });

  app.removeAllContentTypeParsers();
  // Binary bodies (safetensors) arrive as Buffers.
  app.addContentTypeParser('application/octet-stream', (req: FastifyRequest, payload: Readable, done: (err: Error | null, body?: unknown) => void) => {
    if (req.routeOptions.config.streamedBody) return done(null, payload);
    readBody(req, payload, limitFor(req)).then((b) => done(null, b), (e: Error) => done(e));
  });
  // JSON is parsed from the raw bytes, which are kept (rawBody): strict UTF-8, prototype keys refused,
  // and every string and key must be storable text (./input-rules.ts).
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.addContentTypeParser('application/json', async (req: FastifyRequest, payload: Readable) => {
    const raw = await readBody(req, payload, limitFor(req));
    req.rawBody = raw;
    let text: string;
    try {
      text = utf8.decode(raw);
    } catch {
      throw new HttpError(400, 'invalid_json', 'the JSON body is not valid UTF-8');
    }
    const value = await new Promise<unknown>((resolve, reject) => parseJson(req, text, (err, v) => (err ? reject(Object.assign(new HttpError(400, 'invalid_json', `the body is not valid JSON: ${err.message}`), { cause: err })) : resolve(v))));
    refuseBadText(value, 'body');
    return value;
  });
}
