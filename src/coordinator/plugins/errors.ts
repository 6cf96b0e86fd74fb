/**
 * One shape for every refusal and failure: `{ error, message }` with a 4xx status and a message a person
 * can act on, and `{ error, message, requestId }` with a 5xx status, logged with the same request id.
 *
 * The store's transient faults (`StoreUnavailable`: connection lost, timeouts, disk full) answer 503 with
 * Retry-After, since the same request will succeed once the store is back; anything unexpected answers 500.
 * Every 401 passes the failed-authentication limiter (./auth-limit.ts) here, whichever route refused it.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { StoreConflict, StoreUnavailable } from '../../store/store.js';
import { AuthError, HttpError } from '../auth.js';
import type { AuthFailureLimiter } from './auth-limit.js';
import { authFailures } from '../../observability/metrics.js';

/** Seconds a client should wait before retrying a request the store could not serve. */
export const STORE_RETRY_AFTER_S = 5;

export interface ErrorBody {
  error: string;
  message: string;
  requestId?: string;
}

export interface ErrorOptions {
  limiter: AuthFailureLimiter;
}

/** A 5xx answer: logged with the error, and its body names the request id that finds the log line. */
function serverError(req: FastifyRequest, reply: FastifyReply, status: number, error: string, message: string, err: unknown): FastifyReply {
  req.log.error({ err }, `${req.method} ${req.routeOptions.url ?? '(no route)'} failed: ${error}`);
  return reply.status(status).send({ error, message, requestId: String(req.id) } satisfies ErrorBody);
}

/** Whatever 4xx the framework raised, a message without Fastify's internal codes. */
function frameworkMessage(err: FastifyError): string {
  switch (err.code) {
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return 'the body is empty but content-type says application/json; send a JSON value or no content-type';
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return 'the body length does not match content-length';
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return 'content-type must be application/json or application/octet-stream';
    default:
      return err.message;
  }
}

export function errorHandling(app: FastifyInstance, o: ErrorOptions): void {
  app.setErrorHandler((err: FastifyError & { validationContext?: string }, req, reply) => {
    if (err instanceof HttpError && err.status === 401) {
      const over = o.limiter.fail(req.ip, err instanceof AuthError ? err.identity : undefined);
      if (over) {
        authFailures.inc({ status: '429' });
        reply.header('retry-after', String(over.retryAfterS));
        const who = over.limit === 'key' ? 'this key' : 'this address';
        return reply.status(429).send({ error: 'rate_limited', message: `too many failed authentications from ${who}; retry after ${over.retryAfterS} s (${err.message})` } satisfies ErrorBody);
      }
      authFailures.inc({ status: '401' });
      req.log.info({ status: 401, error: err.code }, err.message);
      return reply.status(401).send({ error: err.code, message: err.message } satisfies ErrorBody);
    }
    if (err instanceof HttpError) {
      if (err.status >= 500) return serverError(req, reply, err.status, err.code, err.message, err);
      req.log.info({ status: err.status, error: err.code }, err.message);
      return reply.status(err.status).send({ error: err.code, message: err.message } satisfies ErrorBody);
    }
    if (err instanceof StoreConflict) return reply.status(409).send({ error: 'conflict', message: err.message } satisfies ErrorBody);
    if (err instanceof StoreUnavailable) {
      reply.header('retry-after', String(STORE_RETRY_AFTER_S));
      return serverError(req, reply, 503, 'store_unavailable', `the coordinator's store cannot answer now (${err.message}); retry in ${STORE_RETRY_AFTER_S} s`, err);
    }
    if (err.validation) {
      const where = err.validationContext ?? 'request';
      // An enum's refusal lists what is allowed (AJV only says "one of the allowed values").
      const allowed = err.validation.map((v) => (v.params as { allowedValues?: unknown[] }).allowedValues).find((a) => Array.isArray(a));
      const list = allowed ? ` (allowed: ${allowed.map(String).join(', ')})` : '';
      return reply.status(400).send({ error: 'invalid_request', message: `${where}${err.message.replace(/^(body|querystring|params|headers)/, '')}${list}` } satisfies ErrorBody);
    }
    if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return reply.status(413).send({ error: 'body_too_large', message: err.message } satisfies ErrorBody);
    if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return reply.status(415).send({ error: 'unsupported_media_type', message: frameworkMessage(err) } satisfies ErrorBody);
    if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
      return reply.status(err.statusCode).send({ error: 'bad_request', message: frameworkMessage(err) } satisfies ErrorBody);
    }
    return serverError(req, reply, 500, 'internal', `internal error; the coordinator logged it under request id ${String(req.id)}`, err);
  });

  app.setNotFoundHandler((req, reply) => {
    const path = req.url.split('?')[0];
    return reply.status(404).send({ error: 'not_found', message: `no route ${req.method} ${path}; the API is described at /openapi.json` } satisfies ErrorBody);
  });
}

/**
 * Fastify's `frameworkErrors` option: a URL it cannot decode (bad percent-encoding) is the client's mistake,
 * answered in the common shape instead of Fastify's own.
 */
export function frameworkErrors(err: FastifyError, _req: FastifyRequest, reply: FastifyReply): void {
  const message = err.code === 'FST_ERR_BAD_URL' ? 'the request path is not valid percent-encoded UTF-8' : err.message;
  void reply.status(400).send({ error: 'bad_url', message } satisfies ErrorBody);
}
