/**
 * The one logger factory for Setu's processes: pino, one JSON object per line, the level from an option, else
 * `SETU_LOG_LEVEL`, else `info`. The coordinator hands it to Fastify (every line of a request carries its
 * `reqId`); the site agent and the round engine take it in wave 2.
 *
 * No secret is ever written. Three layers, because secrets reach a log in three shapes:
 *  - as a named field (a request header, a body's `token`, a key file's `privateKey`): pino's path redaction;
 *  - inside a URL (`GET /v1/events?token=sst_…`): the request serializer rewrites secret query values;
 *  - inside free text (an error message that quotes a body, a message that names a token): every string
 *    argument and every error message and stack goes through `scrubText`, which masks Setu's token formats
 *    (`inv_…`, `uinv_…`, `sst_…`), PEM private keys and long base64url runs (signatures, raw keys).
 * `src/observability/logger.test.ts` and the coordinator's log test drive real requests that carry secrets
 * and grep what was written.
 */
import pino, { type DestinationStream, type Logger } from 'pino';

export type { Logger } from 'pino';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

const CENSOR = '[redacted]';

/** Field names whose value is a secret wherever they appear (compared case-insensitively for query strings). */
const SECRET_FIELDS = ['token', 'privateKey', 'privateKeyPem', 'secret', 'password', 'authorization', 'cookie', 'x-setu-signature', 'set-cookie'];

/** pino redaction paths: each secret field at the top level and two levels down (`headers.authorization`, `body.token`, …). */
const REDACT_PATHS = [
  ...SECRET_FIELDS.flatMap((f) => {
    const k = /^[A-Za-z_$][\w$]*$/.test(f) ? f : `["${f}"]`;
    const dot = k.startsWith('[') ? '' : '.';
    return [k, `*${dot}${k}`, `*.*${dot}${k}`];
  }),
];

const SECRET_QUERY = /^(token|secret|password|signature|key|invite|credential)$/i;

// Setu's bearer-like strings: invite tokens, user-invite tokens, stream tokens.
const TOKEN_RE = /\b(inv|uinv|sst)_[A-Za-z0-9_.-]+/g;
// A PEM private key, whole or cut (an error message may quote the start of a body), with real or escaped newlines.
const PEM_RE = /-----BEGIN ([A-Z ]*)PRIVATE KEY-----(?:[A-Za-z0-9+/=\s]|\\[nr])*(?:-----END [A-Z ]*PRIVATE KEY-----)?/g;
// 64+ base64url characters with both letter cases: a signature or a raw key, never a hex digest or an id.
const LONG_B64_RE = /[A-Za-z0-9_-]{64,}/g;

/** Masks secrets inside free text (messages, error messages, stacks, URLs). */
export function scrubText(s: string): string {
  return s
    .replace(PEM_RE, (_m, kind: string) => `-----BEGIN ${kind}PRIVATE KEY----- ${CENSOR}`)
    .replace(TOKEN_RE, (_m, prefix: string) => `${prefix}_${CENSOR}`)
    .replace(LONG_B64_RE, (m) => (/[a-z]/.test(m) && /[A-Z]/.test(m) ? CENSOR : m));
}

/** A URL with the values of secret-named query parameters replaced (`/v1/events?token=[redacted]&study=s1`). */
export function scrubUrl(url: string): string {
  const q = url.indexOf('?');
  const path = scrubText(q < 0 ? url : url.slice(0, q));
  if (q < 0) return path;
  const query = url
    .slice(q + 1)
    .split('&')
    .map((pair) => {
      const eq = pair.indexOf('=');
      const name = eq < 0 ? pair : pair.slice(0, eq);
      let decoded = name;
      try {
        decoded = decodeURIComponent(name);
      } catch {
        /* keep the raw name */
      }
      return eq >= 0 && SECRET_QUERY.test(decoded) ? `${name}=${CENSOR}` : scrubText(pair);
    })
    .join('&');
  return `${path}?${query}`;
}

/** Reads a level from text, naming the source and the allowed values when it is not one. */
export function parseLogLevel(value: string, source: string): LogLevel {
  const v = value.trim().toLowerCase();
  if ((LOG_LEVELS as readonly string[]).includes(v)) return v as LogLevel;
  throw new Error(`${source} must be one of ${LOG_LEVELS.join(', ')}; got ${JSON.stringify(value)}`);
}

export interface CreateLoggerOptions {
  /** Default: `SETU_LOG_LEVEL`, else `info`. */
  level?: LogLevel;
  /** The process part writing (`coordinator`, `site`, …), on every line as `name`. */
  name?: string;
  /**
   * Where lines go: a file path (created mode 600, appended), a file descriptor, or a stream. Default: stdout.
   * Writes are synchronous, so the last lines before a crash are on disk.
   */
  destination?: string | number | DestinationStream;
}

function resolveLevel(level: LogLevel | undefined): LogLevel {
  if (level) return level;
  const env = process.env['SETU_LOG_LEVEL'];
  return env ? parseLogLevel(env, 'SETU_LOG_LEVEL') : 'info';
}

interface RequestLike {
  method?: string;
  url?: string;
  ip?: string;
  id?: unknown;
}

function serializeError(e: unknown): unknown {
  const s = pino.stdSerializers.err(e as Error) as unknown as Record<string, unknown>;
  if (!s || typeof s !== 'object') return s;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(s)) out[k] = typeof v === 'string' ? scrubText(v) : v;
  return out;
}

export function createLogger(o: CreateLoggerOptions = {}): Logger {
  const level = resolveLevel(o.level);
  const dest =
    typeof o.destination === 'string'
      ? pino.destination({ dest: o.destination, sync: true, mkdir: true, mode: 0o600, append: true } as Parameters<typeof pino.destination>[0])
      : typeof o.destination === 'number'
        ? pino.destination({ dest: o.destination, sync: true })
        : (o.destination ?? pino.destination({ dest: 1, sync: true }));
  return pino(
    {
      level,
      ...(o.name ? { name: o.name } : {}),
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACT_PATHS, censor: CENSOR },
      serializers: {
        req: (r: RequestLike) => ({ method: r.method, url: r.url === undefined ? undefined : scrubUrl(r.url), remoteAddress: r.ip }),
        err: serializeError,
        error: serializeError,
      },
      hooks: {
        // Free text is scrubbed too: a message may quote what a client sent.
        logMethod(args, method) {
          method.apply(this, args.map((a) => (typeof a === 'string' ? scrubText(a) : a)) as Parameters<typeof method>);
        },
      },
    },
    dest,
  );
}
