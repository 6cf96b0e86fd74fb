/**
 * Signatures before bodies. A signed request declares its body's SHA-256 in `x-setu-content-sha256` (it is
 * the digest in the signed canonical string, src/protocol/signing.ts), so its signature is checked from the
 * headers alone when the request arrives, before a byte of its body is read:
 *  - an unsigned request may carry at most `preAuthBodyLimit` bytes (enough for an enrolment), and one to a
 *    route that needs a signature is refused at once, its body never read;
 *  - a signed request that verifies may carry up to `bodyLimit`;
 *  - the bytes then received must hash to the signed digest, whatever the content type: the only body
 *    parsers are the two below, both reading through `readBody`; any other content type is refused (415)
 *    without reading; a request whose signature covers a body but that sends none is refused before its
 *    handler runs; GET, HEAD and TRACE may not carry a body at all.
 *
 * A route needs a signature when it names `authHook` (the routes' `preValidation: ctx.auth`); `onRoute` marks
 * it, so the check runs here, in one `onRequest` hook, and `authHook` is left as a last guard that a
 * principal is there. (In wave 2 the routes move into one authenticated scope with this hook on it.)
 */
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { AuthError, HttpError, type Authenticator, type Principal } from '../auth.js';
import { EMPTY_BODY_SHA256, HEADER_CONTENT_SHA256, HEADER_KEY_ID, HEADER_SIGNATURE } from '../../protocol/signing.js';
import { refuseBadText } from './input-rules.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Set on routes that need a signed request (they name ctx.auth). */
    authenticated?: boolean;
  }
  interface FastifyRequest {
    principal?: Principal;
    /** The body digest the verified signature covers. */
    signedBodySha256?: string;
    /** Set once the body's bytes were read and matched the signed digest. */
    bodyVerified?: boolean;
  }
}

export interface SignedRequestOptions {
  authenticator: Authenticator;
  /** The preValidation hook routes name to require a signature. */
  authHook: unknown;
  /** Largest body of a request that is not (yet) authenticated, bytes. */
  preAuthBodyLimit: number;
  /** Largest body of an authenticated request, bytes. */
  bodyLimit: number;
  /** Called once a request authenticates (a site's last-seen time). */
  onAuthenticated?: (p: Principal) => Promise<void>;
}

const BODYLESS = new Set(['GET', 'HEAD', 'TRACE']);

function framesBody(req: FastifyRequest): boolean {
  const len = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (len !== undefined && len !== '0');
}

function tooLarge(limit: number, authenticated: boolean): HttpError {
  return new HttpError(413, 'body_too_large', authenticated ? `request body exceeds the limit of ${limit} bytes` : `an unauthenticated request body may hold at most ${limit} bytes; sign the request for the full limit`);
}

/**
 * Reads a body up to `limit` bytes, hashing as it goes, and checks it against the signed digest (when the
 * request was signed). Past the limit it stops buffering at once and lets the rest drain unread.
 */
function readBody(req: FastifyRequest, payload: Readable, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
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
      hash.update(chunk);
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      const digest = hash.digest('hex');
      if (req.signedBodySha256 !== undefined && digest !== req.signedBodySha256) {
        reject(new AuthError('unauthenticated', `the body received (${received} bytes, SHA-256 ${digest}) is not the body the signature covers (${HEADER_CONTENT_SHA256} ${req.signedBodySha256})`, req.principal?.id));
        return;
      }
      req.bodyVerified = true;
      resolve(Buffer.concat(chunks, received));
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

export function signedRequests(app: FastifyInstance, o: SignedRequestOptions): void {
  const preAuthLimit = Math.min(o.preAuthBodyLimit, o.bodyLimit);
  const limitFor = (req: FastifyRequest) => (req.principal ? o.bodyLimit : preAuthLimit);

  app.addHook('onRoute', (route) => {
    if ([route.preValidation].flat().includes(o.authHook as never)) route.config = { ...(route.config ?? {}), authenticated: true } as typeof route.config;
  });

  app.addHook('onRequest', async (req) => {
    if (BODYLESS.has(req.method) && framesBody(req)) throw new HttpError(400, 'unexpected_body', `a ${req.method} request carries no body`);
    const signed = req.headers[HEADER_KEY_ID] !== undefined || req.headers[HEADER_SIGNATURE] !== undefined;
    if (signed) {
      if (framesBody(req) && req.headers[HEADER_CONTENT_SHA256] === undefined) {
        throw new AuthError('unauthenticated', `a signed request with a body must declare the body's SHA-256 (hex) in ${HEADER_CONTENT_SHA256}`);
      }
      const a = await o.authenticator.authenticate(req);
      req.principal = a.principal;
      req.signedBodySha256 = a.bodySha256;
      await o.onAuthenticated?.(a.principal);
    } else if (req.routeOptions.config?.authenticated) {
      throw new AuthError('unauthenticated', 'missing request signature: every request to this route must be signed (headers x-setu-key-id, x-setu-timestamp, x-setu-nonce, x-setu-signature, and x-setu-content-sha256 with a body; see src/protocol/signing.ts)');
    }
    // A declared length over the limit is refused before a byte is read.
    const len = Number(req.headers['content-length']);
    if (Number.isFinite(len) && len > limitFor(req)) throw tooLarge(limitFor(req), req.principal !== undefined);
  });

  // No body was read (none was sent): the signature must then cover an empty body.
  app.addHook('preValidation', async (req) => {
    if (req.signedBodySha256 !== undefined && !req.bodyVerified && req.signedBodySha256 !== EMPTY_BODY_SHA256) {
      throw new AuthError('unauthenticated', `the signature covers a body (${HEADER_CONTENT_SHA256} ${req.signedBodySha256}) but none was received`, req.principal?.id);
    }
  });

  app.removeAllContentTypeParsers();
  // Binary bodies (safetensors) arrive as Buffers.
  app.addContentTypeParser('application/octet-stream', (req: FastifyRequest, payload: Readable) => readBody(req, payload, limitFor(req)));
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
